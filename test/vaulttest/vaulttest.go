// Package vaulttest runs real HashiCorp Vault servers on 127.0.0.1 for
// tests: dev servers (in-memory storage, unsealed, root token "root") and
// servers with file storage that can be stopped, restarted, sealed and
// unsealed. Transit is mounted at "transit" in every server. It also has
// one-line helpers for the auth set-ups tests need (AppRole roles, child
// tokens with a short TTL, unique names). It is test support only;
// production code never imports it.
//
// The binary is built by `make testbed-vault` (test/testbed/vault.mk) and
// found through $MESHCA_TEST_VAULT_BIN, else in
// ${XDG_CACHE_HOME:-$HOME/.cache}/meshca-testbed/vault-VERSION. Without it
// tests skip, or fail when CI=true.
//
// Most tests can share one dev server per test binary, using names of
// their own (KeyName) for keys, mounts and policies:
//
//	func TestMain(m *testing.M) {
//		code := m.Run()
//		vaulttest.StopShared()
//		os.Exit(code)
//	}
//
//	func TestSomething(t *testing.T) {
//		v := vaulttest.Shared(t)
//		key := vaulttest.KeyName(t)
//		... v.Addr, v.Token, v.Admin ...
//	}
//
// Tests that stop, seal or otherwise disturb their server start a private
// one with Start, StartTLS or StartFile; it is stopped by tb.Cleanup.
package vaulttest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/meshca/meshca/internal/testkit"
)

// Version and environment variable of the test bed.
const (
	Version = "v1.21.0" // as in test/testbed/vault.mk
	EnvBin  = "MESHCA_TEST_VAULT_BIN"
	// DevRootToken is the root token of every dev server.
	DevRootToken = "root"
)

// Time bounds. The machine running tests may be busy; these are limits,
// not expectations.
const (
	readyTimeout     = 60 * time.Second // until Vault answers or is active
	unsealKeyTimeout = 30 * time.Second // until the dev banner shows the unseal key
	callTimeout      = 30 * time.Second // one admin call
	initTimeout      = 60 * time.Second // initialising a file-storage server
	stopGrace        = 10 * time.Second // SIGINT to exit, before SIGKILL
	pollInterval     = 50 * time.Millisecond
)

// Bin returns the Vault binary: $MESHCA_TEST_VAULT_BIN, else where `make
// testbed-vault` caches it. It skips the test when the binary is missing,
// or fails it under CI=true, where `make test` must have built it.
func Bin(tb testing.TB) string {
	tb.Helper()
	return testkit.TestbedBin(tb, EnvBin, "vault-"+Version, "Vault binary", "testbed-vault")
}

// Server is a Vault server on loopback started by a test: a dev server
// (NewDev, Shared, Start, StartTLS) or one with file storage that survives
// a restart (StartFile). Transit is mounted at "transit" in both.
//
// Its fields are set when it is returned and not changed afterwards, so
// parallel tests may read them. The methods that stop, start, seal or
// unseal it are for the one test that owns it.
type Server struct {
	// Addr is the base URL, http(s)://127.0.0.1:PORT.
	Addr string
	// UnsealKey is the only unseal key (threshold 1).
	UnsealKey string
	// Token is the root token: DevRootToken for dev servers.
	Token string
	// CAFile is, for HTTPS, the file holding the CA of Vault's certificate;
	// empty for HTTP.
	CAFile string
	// Admin is a client that uses Token.
	Admin *api.Client

	dev  bool
	bin  string
	args []string
	cmd  *exec.Cmd
	out  *testkit.LogBuffer
	exit chan struct{} // closed when the process has exited
}

var shared struct {
	once sync.Once
	v    *Server
	err  error
}

// Shared returns the dev server shared by the tests of this test binary
// that do not stop or seal it, starting it on first use; each such test
// uses its own names (KeyName). The package's TestMain must call
// StopShared after m.Run.
func Shared(tb testing.TB) *Server {
	tb.Helper()
	bin := Bin(tb)
	shared.once.Do(func() { shared.v, shared.err = NewDev(bin, "") })
	if shared.err != nil {
		tb.Fatalf("start shared vault: %v", shared.err)
	}
	return shared.v
}

// StopShared stops the shared dev server if Shared started it. Call it
// from TestMain once m.Run has returned; it does nothing when no test
// used the shared server.
func StopShared() {
	if shared.v != nil {
		shared.v.Stop()
	}
}

// Start starts a dev server over HTTP for tb and stops it in tb.Cleanup.
func Start(tb testing.TB) *Server {
	tb.Helper()
	return start(tb, false)
}

// StartTLS starts a dev server over HTTPS for tb and stops it in
// tb.Cleanup. Its certificate is issued by a CA that Vault writes to
// CAFile.
func StartTLS(tb testing.TB) *Server {
	tb.Helper()
	return start(tb, true)
}

func start(tb testing.TB, tls bool) *Server {
	tb.Helper()
	tlsDir := ""
	if tls {
		tlsDir = tb.TempDir()
	}
	v, err := NewDev(Bin(tb), tlsDir)
	if err != nil {
		tb.Fatalf("start vault: %v", err)
	}
	tb.Cleanup(v.Stop)
	return v
}

var unsealKeyRE = regexp.MustCompile(`Unseal Key: (\S+)`)

// NewDev starts a dev server with the binary bin (see Bin) and waits until
// it is active with transit mounted. With a tlsDir it serves HTTPS with a
// certificate from a CA that Vault writes to tlsDir/vault-ca.pem. The
// caller must Stop it.
func NewDev(bin, tlsDir string) (*Server, error) {
	addr, err := testkit.FindFreeAddr()
	if err != nil {
		return nil, err
	}
	v := &Server{Addr: "http://" + addr, Token: DevRootToken, dev: true, bin: bin,
		args: []string{"server", "-dev", "-dev-root-token-id=" + DevRootToken, "-dev-listen-address=" + addr, "-dev-no-store-token"}}
	if tlsDir != "" {
		v.Addr, v.CAFile = "https://"+addr, filepath.Join(tlsDir, "vault-ca.pem")
		v.args = append(v.args, "-dev-tls", "-dev-tls-cert-dir="+tlsDir)
	}
	if err := v.startProcess(); err != nil {
		return nil, err
	}
	if err := v.waitReady(readyTimeout, true); err != nil {
		v.Stop()
		return nil, err
	}
	// The banner with the unseal key may come after the server is healthy.
	deadline := time.Now().Add(unsealKeyTimeout)
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

// StartFile starts a Vault server over HTTP with file storage in a
// temporary directory of tb, initialises it with one unseal key, unseals
// it and mounts transit; it is stopped in tb.Cleanup. Unlike a dev server
// it keeps its data across Stop (or Kill) and Restart, after which it is
// sealed until Unseal.
func StartFile(tb testing.TB) *Server {
	tb.Helper()
	bin := Bin(tb)
	addr := testkit.FreeAddr(tb)
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
	v := &Server{Addr: "http://" + addr, bin: bin, args: []string{"server", "-config=" + confFile}}
	if err := v.startProcess(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(v.Stop)
	if err := v.waitReady(readyTimeout, false); err != nil {
		tb.Fatal(err)
	}
	admin, err := v.Client("")
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), initTimeout)
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

// Client returns a new client for v that uses token (none when empty) and,
// for HTTPS, trusts CAFile.
func (v *Server) Client(token string) (*api.Client, error) {
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
	c.ClearToken() // api.NewClient reads $VAULT_TOKEN
	if token != "" {
		c.SetToken(token)
	}
	return c, nil
}

// Seal seals the server. Calls then fail until Unseal.
func (v *Server) Seal() error {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if err := v.Admin.Sys().SealWithContext(ctx); err != nil {
		return fmt.Errorf("seal: %w", err)
	}
	return nil
}

// Unseal unseals the server with UnsealKey and waits until it is active.
func (v *Server) Unseal() error {
	admin, err := v.Client("")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if _, err := admin.Sys().UnsealWithContext(ctx, v.UnsealKey); err != nil {
		return fmt.Errorf("unseal: %w", err)
	}
	return v.waitReady(readyTimeout, true)
}

// Stop ends the server (SIGINT, then SIGKILL after a grace period) and
// waits for it to exit. It does nothing when the server is not running.
func (v *Server) Stop() {
	if v.exited() {
		return
	}
	_ = v.cmd.Process.Signal(os.Interrupt)
	select {
	case <-v.exit:
	case <-time.After(stopGrace):
		_ = v.cmd.Process.Kill()
		<-v.exit
	}
}

// Kill ends the server at once with SIGKILL, as a crash would, and waits
// for it to exit. It does nothing when the server is not running.
func (v *Server) Kill() {
	if v.exited() {
		return
	}
	_ = v.cmd.Process.Kill()
	<-v.exit
}

// Restart starts a server with file storage (StartFile) again after Stop
// or Kill, on the same address and data, and waits until it answers; it
// is sealed until Unseal. A dev server keeps nothing across a restart, so
// Restart refuses one.
func (v *Server) Restart() error {
	if v.dev {
		return errors.New("vaulttest: Restart of a dev server (in-memory storage); use StartFile")
	}
	if !v.exited() {
		return errors.New("vaulttest: Restart of a running server; Stop or Kill it first")
	}
	if err := v.startProcess(); err != nil {
		return err
	}
	return v.waitReady(readyTimeout, false)
}

// Output returns what the server process has written to stdout and stderr
// so far (since its last start).
func (v *Server) Output() string { return v.out.String() }

// startProcess runs the server process; it does not wait for it to be
// ready. HOME is a fresh temporary directory, removed when it exits.
func (v *Server) startProcess() error {
	home, err := os.MkdirTemp("", "meshca-vault-")
	if err != nil {
		return err
	}
	cmd := exec.Command(v.bin, v.args...)
	cmd.Env = []string{"HOME=" + home, "PATH=" + os.Getenv("PATH")}
	out := &testkit.LogBuffer{}
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

// exited reports whether the process has ended (or was never started).
func (v *Server) exited() bool {
	if v.exit == nil {
		return true
	}
	select {
	case <-v.exit:
		return true
	default:
		return false
	}
}

// setUp makes the admin client and mounts transit.
func (v *Server) setUp() error {
	admin, err := v.Client(v.Token)
	if err != nil {
		return err
	}
	v.Admin = admin
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if err := admin.Sys().MountWithContext(ctx, "transit", &api.MountInput{Type: "transit"}); err != nil {
		return fmt.Errorf("mount transit: %w", err)
	}
	return nil
}

// waitReady polls sys/health until Vault answers at all or, with active,
// until it is initialised, unsealed and active.
func (v *Server) waitReady(limit time.Duration, active bool) error {
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
		time.Sleep(pollInterval)
	}
}

// healthCode returns the status of sys/health (200 when initialised,
// unsealed and active), or 0 when Vault does not answer.
func (v *Server) healthCode() int {
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
