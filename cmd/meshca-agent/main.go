// Command meshca-agent is `meshca agent` alone: the same command, flags and
// configuration, in a binary that links nothing else (no CA, issuer, store,
// Kubernetes or Vault code), so that a per-pod sidecar stays small in
// memory. Build it with -tags grpcnotrace,netgo (as `make build` does):
// grpcnotrace leaves out gRPC's request tracing and its html/template
// dependency; netgo the cgo DNS resolver, so that the binary is static and
// does not map the C library.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/meshca/meshca/cmd/internal/agentcmd"
	"github.com/meshca/meshca/cmd/internal/buildinfo"
	"github.com/meshca/meshca/cmd/internal/cliconfig"
)

// version is set at build time with -ldflags "-X main.version=..."; when
// empty, `meshca-agent version` takes it from the Go build info.
var version = ""

func main() {
	root := agentcmd.New()
	root.Use = "meshca-agent"
	root.AddCommand(buildinfo.Command("meshca-agent", version))
	root.SilenceUsage, root.SilenceErrors = true, true
	cliconfig.SetupLogging(root)
	cliconfig.CatchHangups()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := root.ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "meshca-agent:", err)
		os.Exit(1)
	}
}
