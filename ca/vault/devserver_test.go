package vault

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// A dev server is started by the tests themselves from the binary that
// `make testbed-vault` builds (see test/testbed/vault.mk).
const (
	vaultBinEnv  = "MESHCA_TEST_VAULT_BIN"
	vaultVersion = "v1.21.0" // as in test/testbed/vault.mk
)

// devVault is a Vault server on loopback started by a test: a dev server
// (in-memory storage, unsealed, root token "root") or, from
// startFileVault, one with file storage that survives a restart. Transit
// is mounted at "transit" in both.
type devVault struct {
	Addr      string
	UnsealKey string
	Token     string      // root token
	CAFile    string      // for HTTPS: the CA of Vault's certificate
	Admin     *api.Client // uses Token

	bin  string
	args []string
	cmd  *exec.Cmd
	out  *syncBuffer
	exit chan struct{} // closed when the process has exited
}

var (
	sharedOnce  sync.Once
	sharedVault *devVault
	sharedErr   error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if sharedVault != nil {
		sharedVault.Stop()
	}
	os.Exit(code)
}

// vaultBin returns the Vault binary: $MESHCA_TEST_VAULT_BIN, else where
// `make testbed-vault` caches it. It skips the test when the binary is
// missing, or fails it under CI=true, where `make test` must have built it.
func vaultBin(tb testing.TB) string {
	tb.Helper()
	bin := os.Getenv(vaultBinEnv)
	if bin == "" {
		cache := os.Getenv("XDG_CACHE_HOME")
		if cache == "" {
			home, _ := os.UserHomeDir()
			cache = filepath.Join(home, ".cache")
		}
		bin = filepath.Join(cache, "meshca-testbed", "vault-"+vaultVersion)
	}
	if st, err := os.Stat(bin); err == nil && !st.IsDir() {
		return bin
	}
	msg := fmt.Sprintf("Vault binary not found (%s=%q): `make test` or `make testbed-vault` builds it", vaultBinEnv, bin)
	if os.Getenv("CI") == "true" {
		tb.Fatal(msg)
	}
	tb.Skip(msg)
	return ""
}

// shared returns the dev server shared by the tests that do not stop or
// seal it; each such test uses its own key names.
func shared(tb testing.TB) *devVault {
	tb.Helper()
	bin := vaultBin(tb)
	sharedOnce.Do(func() { sharedVault, sharedErr = startDevVault(bin, "") })
	if sharedErr != nil {
		tb.Fatalf("start shared vault: %v", sharedErr)
	}
	return sharedVault
}

// dedicated starts a dev server for one test, stopped at its end; with tls
// it serves HTTPS (see startDevVault).
func dedicated(tb testing.TB, tls bool) *devVault {
	tb.Helper()
	tlsDir := ""
	if tls {
		tlsDir = tb.TempDir()
	}
	v, err := startDevVault(vaultBin(tb), tlsDir)
	if err != nil {
		tb.Fatalf("start vault: %v", err)
	}
	tb.Cleanup(v.Stop)
	return v
}

var keyNameUnsafe = regexp.MustCompile(`[^A-Za-z0-9_]+`)

var unsealKeyRE = regexp.MustCompile(`Unseal Key: (\S+)`)

// startDevVault starts a dev server; with a tlsDir it serves HTTPS with a
// certificate from a CA that Vault writes to tlsDir/vault-ca.pem.
func startDevVault(bin, tlsDir string) (*devVault, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	v := &devVault{Addr: "http://" + addr, Token: "root", bin: bin,
		args: []string{"server", "-dev", "-dev-root-token-id=root", "-dev-listen-address=" + addr, "-dev-no-store-token"}}
	if tlsDir != "" {
		v.Addr, v.CAFile = "https://"+addr, filepath.Join(tlsDir, "vault-ca.pem")
		v.args = append(v.args, "-dev-tls", "-dev-tls-cert-dir="+tlsDir)
	}
	if err := v.Start(); err != nil {
		return nil, err
	}
	if err := v.waitReady(60*time.Second, true); err != nil {
		v.Stop()
		return nil, err
	}
	// The banner with the unseal key may come after the server is healthy.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if m := unsealKeyRE.FindStringSubmatch(v.out.String()); m != nil {
			v.UnsealKey = m[1]
			break
		}
		if time.Now().After(deadline) {
			v.Stop()
			return nil, fmt.Errorf("no unseal key in the output:\n%s", v.out.String())
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
	if err := v.setUp(); err != nil {
		v.Stop()
		return nil, err
	}
	return v, nil
}

// startFileVault starts a Vault server with file storage in a temporary
// directory, initialises it with one unseal key and unseals it.
func startFileVault(tb testing.TB) *devVault {
	tb.Helper()
	bin := vaultBin(tb)
	port, err := freePort()
	if err != nil {
		tb.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	dir := tb.TempDir()
	conf := fmt.Sprintf(`storage "file" { path = %q }
listener "tcp" {
  address     = %q
  tls_disable = true
}
disable_mlock = true
api_addr      = "http://%s"
`, filepath.Join(dir, "data"), addr, addr)
	confFile := filepath.Join(dir, "vault.hcl")
	if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
		tb.Fatal(err)
	}
	v := &devVault{Addr: "http://" + addr, bin: bin, args: []string{"server", "-config=" + confFile}}
	if err := v.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(v.Stop)
	if err := v.waitReady(60*time.Second, false); err != nil {
		tb.Fatal(err)
	}
	admin, err := v.client()
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	init, err := admin.Sys().InitWithContext(ctx, &api.InitRequest{SecretShares: 1, SecretThreshold: 1})
	if err != nil {
		tb.Fatalf("init: %v", err)
	}
	v.UnsealKey, v.Token = init.Keys[0], init.RootToken
	if err := v.Unseal(); err != nil {
		tb.Fatal(err)
	}
	if err := v.setUp(); err != nil {
		tb.Fatal(err)
	}
	return v
}

// Start runs the server process; it does not wait for it to be ready.
func (v *devVault) Start() error {
	home, err := os.MkdirTemp("", "meshca-vault-")
	if err != nil {
		return err
	}
	cmd := exec.Command(v.bin, v.args...)
	cmd.Env = []string{"HOME=" + home, "PATH=" + os.Getenv("PATH")}
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		os.RemoveAll(home)
		return fmt.Errorf("start %s: %w", v.bin, err)
	}
	exit := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		os.RemoveAll(home)
		close(exit)
	}()
	v.cmd, v.out, v.exit = cmd, out, exit
	return nil
}

// Unseal unseals the server and waits until it is active.
func (v *devVault) Unseal() error {
	admin, err := v.client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := admin.Sys().UnsealWithContext(ctx, v.UnsealKey); err != nil {
		return fmt.Errorf("unseal: %w", err)
	}
	return v.waitReady(60*time.Second, true)
}

// client returns a client for v with no token.
func (v *devVault) client() (*api.Client, error) {
	conf := &api.Config{Address: v.Addr}
	if v.CAFile != "" {
		if err := conf.ConfigureTLS(&api.TLSConfig{CACert: v.CAFile}); err != nil {
			return nil, err
		}
	}
	c, err := api.NewClient(conf)
	if err != nil {
		return nil, err
	}
	c.ClearToken()
	return c, nil
}

// setUp makes the admin client and mounts transit.
func (v *devVault) setUp() error {
	admin, err := v.client()
	if err != nil {
		return err
	}
	admin.SetToken(v.Token)
	v.Admin = admin
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := admin.Sys().MountWithContext(ctx, "transit", &api.MountInput{Type: "transit"}); err != nil {
		return fmt.Errorf("mount transit: %w", err)
	}
	return nil
}

// waitReady polls sys/health until Vault answers at all or, with active,
// until it is initialised, unsealed and active.
func (v *devVault) waitReady(limit time.Duration, active bool) error {
	deadline := time.Now().Add(limit)
	for {
		select {
		case <-v.exit:
			return fmt.Errorf("vault exited:\n%s", v.out.String())
		default:
		}
		code := v.healthCode()
		if (active && code == http.StatusOK) || (!active && code != 0) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("vault not ready after %v (health %d):\n%s", limit, code, v.out.String())
		}
		time.Sleep(50 * time.Millisecond) // poll interval
	}
}

// healthCode returns the status of sys/health (200 when initialised,
// unsealed and active), or 0 when Vault does not answer.
func (v *devVault) healthCode() int {
	c := http.Client{Timeout: 2 * time.Second}
	if v.CAFile != "" {
		pemBytes, err := os.ReadFile(v.CAFile)
		if err != nil {
			return 0 // not written yet
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pemBytes)
		c.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: true}
	}
	resp, err := c.Get(v.Addr + "/v1/sys/health")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// Stop ends the server and waits (bounded) for it to exit.
func (v *devVault) Stop() {
	select {
	case <-v.exit:
		return
	default:
	}
	_ = v.cmd.Process.Signal(os.Interrupt)
	select {
	case <-v.exit:
	case <-time.After(10 * time.Second):
		_ = v.cmd.Process.Kill()
		<-v.exit
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// syncBuffer collects the server's output from its copying goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// nameSeq makes names unique within the process: with -count=N the shared
// server outlives each run of a test.
var nameSeq atomic.Int64

// keyName turns a test name into a fresh Transit key (and mount) name.
func keyName(tb testing.TB) string {
	base := strings.ToLower(strings.Trim(keyNameUnsafe.ReplaceAllString(tb.Name(), "-"), "-"))
	return base + "-" + strconv.FormatInt(nameSeq.Add(1), 10)
}

// tokenConfig returns a Config for v with the given token and key name.
func tokenConfig(v *devVault, token, key string) Config {
	return Config{Address: v.Addr, KeyName: key, Auth: AuthConfig{Token: token}}
}

// newSigner creates a Signer and closes it at the end of the test.
func newSigner(tb testing.TB, cfg Config) *Signer {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := New(ctx, cfg)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// eventually polls cond every 50ms until it returns nil or limit passes.
func eventually(tb testing.TB, limit time.Duration, what string, cond func() error) {
	tb.Helper()
	deadline := time.Now().Add(limit)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s: not within %v: %v", what, limit, err)
		}
		time.Sleep(50 * time.Millisecond) // poll interval
	}
}
