package testkit

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// modulePath is the module whose root ModuleRoot finds.
const modulePath = "github.com/meshca/meshca"

// ModuleRoot returns the checkout's top directory: the first directory,
// from the working directory upwards, whose go.mod declares this module
// (tests run in their package's directory; `make` commands in the top one).
// It does not derive it from a source file's path, which -trimpath (as
// `make` builds) replaces with the import path. It panics outside a
// checkout: it is meant for test plumbing, where that is a broken setup.
func ModuleRoot() string {
	dir, err := os.Getwd()
	if err != nil {
		panic("testkit: working directory: " + err.Error())
	}
	for {
		if declaresModule(filepath.Join(dir, "go.mod")) {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			panic("testkit: no go.mod of " + modulePath + " above the working directory")
		}
		dir = parent
	}
}

// declaresModule reports whether the go.mod at path declares modulePath.
func declaresModule(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) == 2 && fields[0] == "module" {
			return fields[1] == modulePath
		}
	}
	return false
}

// GoCommand returns `go ARGS...` in the build configuration `make` uses
// for everything but the race detector: static (CGO_ENABLED=0) and
// -trimpath. A binary or tool a test builds then reuses what `make build`,
// vet and the test bed compiled, instead of compiling the module graph
// again in the configuration of the race-enabled test that runs it
// (CGO_ENABLED=1): minutes on a cold cache. Add to cmd.Env, do not replace it.
func GoCommand(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS="+withTrimpath(os.Getenv("GOFLAGS")))
	return cmd
}

// withTrimpath returns the GOFLAGS value goflags with -trimpath added.
func withTrimpath(goflags string) string {
	for _, f := range strings.Fields(goflags) {
		if f == "-trimpath" || f == "-trimpath=true" {
			return goflags
		}
	}
	return strings.TrimSpace(goflags + " -trimpath")
}
