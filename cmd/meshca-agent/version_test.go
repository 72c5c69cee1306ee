package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshca/meshca/internal/testkit"
)

// TestVersionOfPlainGoBuild builds meshca-agent as a user would with `go
// build` (no -ldflags) in a git checkout and checks that `meshca-agent
// version` reports that checkout's commit, the commit's date and the
// uncommitted change, as git records them. The checkout is a copy of this
// tree committed afresh: the go command stamps VCS information only where
// .git is a directory, which it is not in a linked worktree.
func TestVersionOfPlainGoBuild(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Fatalf("the go command is needed to build meshca-agent: %v", err)
	}
	top := git(t, "", "rev-parse", "--show-toplevel")
	files := strings.Split(git(t, top, "ls-files", "-z", "--cached", "--others", "--exclude-standard"), "\x00")
	repo := t.TempDir()
	for _, f := range files {
		if f == "" {
			continue
		}
		data, err := os.ReadFile(filepath.Join(top, f))
		if os.IsNotExist(err) {
			continue // deleted, not yet committed
		} else if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(repo, filepath.Dir(f)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(repo, f), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	git(t, repo, "init", "-q")
	git(t, repo, "add", "-A")
	git(t, repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "copy",
		"--date", "2026-01-02T03:04:05Z")
	commit := git(t, repo, "rev-parse", "HEAD")
	// An uncommitted change: the build is of a modified tree.
	if err := os.WriteFile(filepath.Join(repo, "uncommitted.txt"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}

	bin := filepath.Join(t.TempDir(), "meshca-agent")
	build := testkit.GoCommand(context.Background(), "build", "-buildvcs=true", "-tags", "grpcnotrace,netgo", "-o", bin, "./cmd/meshca-agent")
	build.Dir = repo
	build.Env = append(build.Env, "GIT_COMMITTER_DATE=2026-01-02T03:04:05Z")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatalf("meshca-agent version: %v", err)
	}
	got := strings.TrimSpace(string(out))
	// The go command derives a pseudo-version from the commit (its date
	// and hash), marked +dirty for the uncommitted change.
	version := "v0.0.0-20260102030405-" + commit[:12] + "+dirty"
	want := "meshca-agent " + version + " commit " + commit + " date 2026-01-02T03:04:05Z modified go"
	if !strings.HasPrefix(got, want) {
		t.Errorf("meshca-agent version = %q, want prefix %q", got, want)
	}
}

// git runs git in dir ("" for the current directory), without the user's
// or the system's configuration, and returns its trimmed output.
func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1",
		"GIT_COMMITTER_DATE=2026-01-02T03:04:05Z")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git %v: %v (the test runs inside a git checkout)", args, err)
	}
	return strings.TrimSpace(string(out))
}
