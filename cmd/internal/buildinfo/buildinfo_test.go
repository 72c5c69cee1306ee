package buildinfo

import (
	"runtime/debug"
	"strings"
	"testing"
)

func TestFromBuildInfo(t *testing.T) {
	vcs := []debug.BuildSetting{
		{Key: "-trimpath", Value: "true"},
		{Key: "vcs", Value: "git"},
		{Key: "vcs.revision", Value: "0123456789abcdef0123456789abcdef01234567"},
		{Key: "vcs.time", Value: "2026-12-07T07:00:00Z"},
		{Key: "vcs.modified", Value: "true"},
	}
	for _, tc := range []struct {
		name    string
		ldflags string
		bi      *debug.BuildInfo
		want    Info
	}{
		{
			name:    "ldflags version wins over the module version",
			ldflags: "v1.2.3",
			bi:      &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "v0.0.0-2026"}, Settings: vcs},
			want: Info{Version: "v1.2.3", Commit: "0123456789abcdef0123456789abcdef01234567",
				Date: "2026-12-07T07:00:00Z", Modified: true, GoVersion: "go1.26.0"},
		},
		{
			name: "go build in a checkout: module version and VCS stamp",
			bi:   &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "(devel)"}, Settings: vcs[:4]},
			want: Info{Version: "(devel)", Commit: "0123456789abcdef0123456789abcdef01234567",
				Date: "2026-12-07T07:00:00Z", GoVersion: "go1.26.0"},
		},
		{
			name: "go install of a tagged module: no VCS stamp",
			bi:   &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "v0.4.0"}},
			want: Info{Version: "v0.4.0", GoVersion: "go1.26.0"},
		},
		{
			name: "no build info",
			want: Info{Version: "unknown"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := FromBuildInfo(tc.ldflags, tc.bi); got != tc.want {
				t.Errorf("FromBuildInfo = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestInfoString(t *testing.T) {
	s := Info{Version: "v1.2.3", Commit: "abc", Date: "2026-12-07T07:00:00Z", Modified: true, GoVersion: "go1.26.0"}.String()
	for _, want := range []string{"v1.2.3 ", "commit abc ", "date 2026-12-07T07:00:00Z ", " modified ", " go1.26.0 "} {
		if !strings.Contains(s, want) {
			t.Errorf("%q does not contain %q", s, want)
		}
	}
	if s := (Info{Version: "(devel)"}).String(); !strings.Contains(s, "commit unknown date unknown unknown") || strings.Contains(s, "modified") {
		t.Errorf("unknown build: %q", s)
	}
}
