package testkit

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

func TestModuleRoot(t *testing.T) {
	root := ModuleRoot()
	if !declaresModule(filepath.Join(root, "go.mod")) {
		t.Fatalf("ModuleRoot() = %s: its go.mod does not declare %s", root, modulePath)
	}
	// This package's directory is internal/testkit below the root.
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(root, "internal", "testkit"); wd != want {
		t.Errorf("working directory %s, want %s below ModuleRoot()", wd, want)
	}
	// A go.mod of another module on the way up is passed over.
	other := filepath.Join(t.TempDir(), "go.mod")
	if err := os.WriteFile(other, []byte("module example.com/other\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if declaresModule(other) {
		t.Errorf("declaresModule(%s) = true for another module", other)
	}
}

func TestGoCommandEnv(t *testing.T) {
	for _, tc := range []struct{ goflags, want string }{
		{"", "-trimpath"},
		{"-mod=readonly", "-mod=readonly -trimpath"},
		{"-trimpath -mod=mod", "-trimpath -mod=mod"},
	} {
		t.Setenv("GOFLAGS", tc.goflags)
		t.Setenv("CGO_ENABLED", "1")
		cmd := GoCommand(context.Background(), "version")
		// The last setting of a variable is the one the process sees.
		env := cmd.Environ()
		if got := lastValue(env, "GOFLAGS"); got != tc.want {
			t.Errorf("GOFLAGS=%q: the command gets %q, want %q", tc.goflags, got, tc.want)
		}
		if last := lastValue(env, "CGO_ENABLED"); last != "0" {
			t.Errorf("CGO_ENABLED = %q, want 0", last)
		}
	}
}

// lastValue returns the last value env gives name.
func lastValue(env []string, name string) string {
	v := ""
	for _, kv := range env {
		if len(kv) > len(name) && kv[:len(name)+1] == name+"=" {
			v = kv[len(name)+1:]
		}
	}
	return v
}
