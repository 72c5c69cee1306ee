// Command meshca is the one meshca binary: the development CA (`meshca dev`)
// and its token helper, the root (`meshca root serve`), the cluster issuer
// (`meshca issuer serve`), the agent, the admin client, a certificate
// fetcher, migrations and audit checks. It parses flags and config into
// component Configs and runs them; the logic lives in the packages.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/meshca/meshca/cmd/internal/agentcmd"
	"github.com/meshca/meshca/cmd/internal/buildinfo"
	"github.com/meshca/meshca/cmd/internal/cliconfig"
)

// version is set at build time with -ldflags "-X main.version=..."; when
// empty, `meshca version` takes it from the Go build info.
var version = ""

func main() {
	cliconfig.CatchHangups()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newCLI().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "meshca:", err)
		os.Exit(1)
	}
}

// newCLI is the top-level `meshca` command. ("root" in this package means
// the root CA only.)
func newCLI() *cobra.Command {
	cli := &cobra.Command{
		Use:           "meshca",
		Short:         "meshca: workload identity (SPIFFE X.509) for service meshes",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	cliconfig.SetupLogging(cli)
	cli.AddCommand(newDevCommand(), newIssuerCommand(), newCertCommand(), agentcmd.New(), buildinfo.Command("meshca", version))
	cli.AddCommand(newMigrateCommand(), newAuditCommand(), newRootCACommand(), newAdminCommand(), newStatusCommand())
	return cli
}
