package e2e

import (
	"maps"
	"os"
	"slices"
	"testing"
	"time"
)

// BenchmarkAgentRSS measures the resident memory of the agent-only binary
// meshca-agent under TestAgentRSS's load (one identity, 10 SDS streams, each
// having received its secret), and compares it with another build of the
// same binary in the same run: $MESHCA_AGENT_BASE_BIN, typically built from
// an older commit. Both run against one `meshca dev`, one after the other,
// alternating which goes first from one iteration to the next, so that drift
// of the shared machine hits both alike. Without $MESHCA_AGENT_BASE_BIN only
// this checkout's binary ($MESHCA_AGENT_BIN, else built here) is measured.
//
// Reported: the median VmRSS, RssAnon and RssFile (kB) of each binary.
// `make bench-agent-rss BASE=<commit>` builds the base binary and runs it:
//
//	go test ./test/e2e -run '^$' -bench AgentRSS -benchtime 3x -v
func BenchmarkAgentRSS(b *testing.B) {
	srv := startShortLivedDev(b)
	_, tokenFile := mintToken(b, srv.Dir, "token")
	bins := map[string]string{"new": agentBinary(b)}
	if base := os.Getenv("MESHCA_AGENT_BASE_BIN"); base != "" {
		bins["base"] = base
	}
	names := slices.Sorted(maps.Keys(bins))
	samples := map[string][]map[string]int{}
	for i := 0; b.Loop(); i++ {
		for j := range names {
			name := names[(i+j)%len(names)]
			a := startAgentCmd(b, []string{bins[name]}, srv, tokenFile, time.Hour)
			m := streamsRSS(b, a.cmd.Process.Pid, a.SDSSocket)
			a.stop(b)
			samples[name] = append(samples[name], m)
			b.Logf("%s: VmRSS %d kB (RssAnon %d kB, RssFile %d kB)", name, m["VmRSS"], m["RssAnon"], m["RssFile"])
		}
	}
	for _, name := range names {
		for _, field := range []string{"VmRSS", "RssAnon", "RssFile"} {
			b.ReportMetric(medianOf(samples[name], field), name+"-"+field+"-kB")
		}
	}
}

// medianOf returns the median of field over samples (the lower middle one
// for an even count).
func medianOf(samples []map[string]int, field string) float64 {
	var v []int
	for _, m := range samples {
		v = append(v, m[field])
	}
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	return float64(v[(len(v)-1)/2])
}
