package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshca/meshca/internal/testkit"
)

const (
	// commandTimeout bounds every one-shot command (token, fetch, openssl).
	// cert fetch gives up after 30 s on its own; this is the backstop.
	commandTimeout = 60 * time.Second
	// buildTimeout bounds building a binary.
	buildTimeout = 10 * time.Minute
)

var (
	// meshcaBin is the absolute path of the binary under test.
	meshcaBin string
	// binDir holds an executable named "meshca" (the binary, or a symlink to
	// $MESHCA_BIN), for commands typed into a shell exactly as documented.
	binDir string
)

// TestMain builds cmd/meshca once (or uses $MESHCA_BIN). A failed build fails
// the whole run: these tests never skip because the binary is missing.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "meshca-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	code := 1
	if err := setUpBinary(dir); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
	} else {
		code = m.Run()
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

func setUpBinary(dir string) error {
	binDir = dir
	bin, err := testkit.MeshcaBinary(dir)
	if err != nil {
		return err
	}
	meshcaBin = bin
	if link := filepath.Join(dir, "meshca"); bin != link {
		return os.Symlink(bin, link)
	}
	return nil
}

// result is what a finished command left behind.
type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit code %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// runMeshca runs the binary with args in dir ("" for the test's own working
// directory) and returns its output and exit code, failing the test if it
// cannot be started or runs longer than commandTimeout.
func runMeshca(t testing.TB, dir string, args ...string) result {
	t.Helper()
	return runWithin(t, commandTimeout, dir, meshcaBin, args...)
}

// runShell runs script with sh -c in dir, with the meshca binary first on
// PATH under its own name, so that commands can be written exactly as a user
// types them (redirections included).
func runShell(t testing.TB, dir, script string) result {
	t.Helper()
	return runWithin(t, commandTimeout, dir, "sh", "-c", script)
}

// runWithin runs name with args in dir and waits at most timeout for it.
func runWithin(t testing.TB, timeout time.Duration, dir, name string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PATH="+binDir+string(os.PathListSeparator)+os.Getenv("PATH"))
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	if ctx.Err() != nil {
		t.Fatalf("%s %s: did not finish within %v\n%s", name, strings.Join(args, " "), timeout, r)
	}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr):
		r.code = exitErr.ExitCode()
	default:
		t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return r
}

// mustSucceed fails the test unless r is a zero exit.
func mustSucceed(t testing.TB, what string, r result) {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("%s failed: %s", what, r)
	}
}

// mintToken runs `meshca dev token` in dir with the given extra args for
// default/web and writes the token to dir/name, returning the token and its
// path.
func mintToken(t testing.TB, dir, name string, extra ...string) (token, path string) {
	t.Helper()
	args := append([]string{"dev", "token", "--namespace", "default", "--service-account", "web"}, extra...)
	r := runMeshca(t, dir, args...)
	mustSucceed(t, "meshca dev token", r)
	token = strings.TrimSpace(r.stdout)
	if strings.Count(token, ".") != 2 {
		t.Fatalf("meshca dev token printed %q, want a JWT (three dot-separated parts)", r.stdout)
	}
	path = filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(r.stdout), 0o600); err != nil {
		t.Fatal(err)
	}
	return token, path
}

// fetchCert runs `meshca cert fetch` against srv with the token in
// tokenFile, writing into out, plus extra flags.
func fetchCert(t testing.TB, srv *devServer, tokenFile, out string, extra ...string) result {
	t.Helper()
	args := append([]string{"cert", "fetch",
		"--issuer", srv.Addr, "--ca-bundle", srv.BundlePath(),
		"--token-file", tokenFile, "--out", out}, extra...)
	return runMeshca(t, srv.Dir, args...)
}
