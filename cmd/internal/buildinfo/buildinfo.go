// Package buildinfo is what `meshca version` and `meshca-agent version`
// print: the release version, the commit, the commit's date and whether
// the tree had local changes. It works for every kind of build: `make
// build` sets the version with -ldflags "-X main.version=...", and a plain
// `go build` or `go run` inside a checkout still carries the commit in the
// Go build info (vcs.revision, vcs.time, vcs.modified).
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// Info describes one build. Empty fields are unknown (a build outside a
// version-controlled tree, or with -buildvcs=false).
type Info struct {
	// Version is the -X version if set, else the main module's version
	// from the build info ("(devel)" for a build inside the checkout
	// without VCS stamping).
	Version string
	// Commit is vcs.revision: the full commit hash.
	Commit string
	// Date is vcs.time: the commit's time (RFC 3339), not the time of the
	// build, so that two builds of one commit are the same bytes.
	Date string
	// Modified is vcs.modified: the tree had uncommitted changes.
	Modified bool
	// GoVersion is the toolchain that built the binary.
	GoVersion string
}

// Read returns the running binary's Info; ldflagsVersion (the program's
// -X variable) wins over the build info's module version when not empty.
func Read(ldflagsVersion string) Info {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		bi = nil
	}
	return FromBuildInfo(ldflagsVersion, bi)
}

// FromBuildInfo is Read's pure part; bi may be nil (no build info).
func FromBuildInfo(ldflagsVersion string, bi *debug.BuildInfo) Info {
	info := Info{Version: ldflagsVersion}
	if bi == nil {
		if info.Version == "" {
			info.Version = "unknown"
		}
		return info
	}
	info.GoVersion = bi.GoVersion
	if info.Version == "" {
		info.Version = bi.Main.Version
	}
	if info.Version == "" {
		info.Version = "unknown"
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			info.Commit = s.Value
		case "vcs.time":
			info.Date = s.Value
		case "vcs.modified":
			info.Modified = s.Value == "true"
		}
	}
	return info
}

// String is one line: "VERSION commit C date D [modified] GO". Unknown
// fields read "unknown".
func (i Info) String() string {
	commit, date := or(i.Commit, "unknown"), or(i.Date, "unknown")
	mod := ""
	if i.Modified {
		mod = " modified"
	}
	return fmt.Sprintf("%s commit %s date %s%s %s %s/%s",
		i.Version, commit, date, mod, or(i.GoVersion, "unknown"), runtime.GOOS, runtime.GOARCH)
}

// Command is the `version` subcommand of program, printing
// "PROGRAM " + Read(ldflagsVersion).String() on one line.
func Command(program, ldflagsVersion string) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit and commit date of this " + program + " binary",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), program, Read(ldflagsVersion))
		},
	}
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
