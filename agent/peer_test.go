package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/meshca/meshca/internal/testkit"
)

// probeEnv names the Workload API socket a re-executed test binary probes
// (see TestMain) instead of running tests.
const probeEnv = "MESHCA_AGENT_TEST_PROBE_SOCKET"

func TestMain(m *testing.M) {
	if path := os.Getenv(probeEnv); path != "" {
		fmt.Println(probeWorkloadAPI(path))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// probeWorkloadAPI asks the Workload API at path for an X.509-SVID and
// says what it got: "svid <spiffe id>" or "refused <code>".
func probeWorkloadAPI(path string) string {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	svid, err := fetchSVID(ctx, path)
	if err != nil {
		return "refused " + status.Code(err).String()
	}
	return "svid " + svid
}

// fetchSVID returns the SPIFFE ID of the first X.509-SVID the Workload API
// at path sends, failing fast when the socket cannot be used.
func fetchSVID(ctx context.Context, path string) (string, error) {
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return "", err
	}
	defer conn.Close()
	stream, err := workload.NewSpiffeWorkloadAPIClient(conn).FetchX509SVID(withHeader(ctx), &workload.X509SVIDRequest{})
	if err != nil {
		return "", err
	}
	resp, err := stream.Recv()
	if err != nil {
		return "", err
	}
	return resp.GetSvids()[0].GetSpiffeId(), nil
}

// probeAs runs the Workload API probe at path in a copy of the test binary
// as user uid and group gid, and returns its answer.
func probeAs(t *testing.T, path string, uid, gid uint32) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(worldReadableDir(t), "probe")
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), probeEnv+"="+path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("probe as %d:%d: %v\n%s", uid, gid, err, ee.Stderr)
		}
		t.Fatalf("probe as %d:%d: %v", uid, gid, err)
	}
	return strings.TrimSpace(string(out))
}

// worldReadableDir returns a temporary directory that every user may
// traverse, down from /, for sockets and binaries other users must reach.
func worldReadableDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "meshca-peer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

const nobody = 65534

// TestWorkloadSocketOtherUsers runs the Workload API as an agent run by
// root, and probes it from a process running as nobody: by default nobody
// gets nothing, and gets the identity only when the socket's group or mode
// lets it in and the peer check (when configured) names it.
func TestWorkloadSocketOtherUsers(t *testing.T) {
	tree := testkit.New(t, testkit.Options{Now: time.Now().Add(-time.Hour)})
	fi := newFakeIssuer(t, tree, false)
	if os.Geteuid() != 0 {
		// Playing another user takes root. Without it, check that the
		// default mode keeps every other user out.
		ra := startAgentWith(t, fi.addr, fi.bundleFile, dummyToken(t), time.Hour, nil)
		if info, err := os.Stat(ra.cfg.WorkloadSocket); err != nil || info.Mode().Perm() != 0o600 {
			t.Errorf("Workload API socket: %v, mode %v, want 0600", err, info.Mode().Perm())
		}
		return
	}
	for _, tc := range []struct {
		name  string
		tweak func(*Config)
		want  string
	}{
		{"default", nil, "refused Unavailable"},
		{"mode 0666", func(c *Config) { c.WorkloadSocketMode = 0o666 }, "svid " + webID.String()},
		{"nobody's group", func(c *Config) { c.WorkloadSocketGroup = strconv.Itoa(nobody) }, "svid " + webID.String()},
		{"another group", func(c *Config) { c.WorkloadSocketGroup = "1" }, "refused Unavailable"},
		{"mode 0666, other uid allowed", func(c *Config) { c.WorkloadSocketMode, c.WorkloadPeers.UIDs = 0o666, []int{0} }, "refused Unavailable"},
		{"mode 0666, nobody's uid allowed", func(c *Config) { c.WorkloadSocketMode, c.WorkloadPeers.UIDs = 0o666, []int{0, nobody} }, "svid " + webID.String()},
		{"mode 0666, nobody's gid allowed", func(c *Config) { c.WorkloadSocketMode, c.WorkloadPeers.GIDs = 0o666, []int{nobody} }, "svid " + webID.String()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := worldReadableDir(t)
			ra := startAgentWith(t, fi.addr, fi.bundleFile, dummyToken(t), time.Hour, func(c *Config) {
				c.WorkloadSocket, c.SDSSocket = filepath.Join(dir, "spiffe.sock"), ""
				if tc.tweak != nil {
					tc.tweak(c)
				}
			})
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			if _, err := fetchSVID(ctx, ra.cfg.WorkloadSocket); err != nil && !ra.cfg.WorkloadPeers.policy().Enabled() {
				t.Fatalf("the agent's own user: %v", err) // the agent is serving
			}
			if got := probeAs(t, ra.cfg.WorkloadSocket, nobody, nobody); got != tc.want {
				t.Errorf("nobody got %q, want %q", got, tc.want)
			}
			if len(ra.cfg.WorkloadPeers.UIDs) > 0 && tc.want != "svid "+webID.String() {
				line := ra.logs.waitFor(t, "connection refused: peer uid and gid not allowed", `"peer_uid":65534`, `"socket":"workload api"`)
				if !strings.Contains(line, `"level":"WARN"`) {
					t.Errorf("refusal logged as %s, want a WARN", line)
				}
			}
		})
	}
}

// TestSocketPeerCheck needs no other user: a peer policy that does not
// name the test's own uid refuses it on both sockets, with an opaque
// error, and the agent keeps serving the uids it names.
func TestSocketPeerCheck(t *testing.T) {
	tree := testkit.New(t, testkit.Options{Now: time.Now().Add(-time.Hour)})
	fi := newFakeIssuer(t, tree, false)
	me := os.Geteuid()
	ra := startAgentWith(t, fi.addr, fi.bundleFile, dummyToken(t), time.Hour, func(c *Config) {
		c.WorkloadPeers = PeerPolicy{UIDs: []int{me + 1}, GIDs: []int{os.Getegid() + 1}}
		c.SDSPeers = PeerPolicy{UIDs: []int{me + 1}}
	})
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if _, err := fetchSVID(ctx, ra.cfg.WorkloadSocket); status.Code(err) != codes.Unavailable {
		t.Errorf("Workload API from a uid not allowed: %v, want Unavailable", err)
	}
	ra.logs.waitFor(t, "connection refused: peer uid and gid not allowed", `"socket":"workload api"`, fmt.Sprintf(`"peer_uid":%d`, me))
	e := envoy(t, ra.cfg.SDSSocket, "node")
	if _, err := e.Subscribe(ctx, ResourceDefault); err == nil {
		t.Error("SDS from a uid not allowed: subscribed, want a refusal")
	}
	ra.logs.waitFor(t, "connection refused: peer uid and gid not allowed", `"socket":"sds"`, fmt.Sprintf(`"peer_uid":%d`, me))

	allowed := startAgentWith(t, fi.addr, fi.bundleFile, dummyToken(t), time.Hour, func(c *Config) {
		c.WorkloadPeers = PeerPolicy{UIDs: []int{me + 1}, GIDs: []int{os.Getegid()}}
	})
	if id, err := fetchSVID(ctx, allowed.cfg.WorkloadSocket); err != nil || id != webID.String() {
		t.Errorf("Workload API from an allowed gid: %q, %v", id, err)
	}
}
