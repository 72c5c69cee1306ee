package docs

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// metricRow is one row of the metrics reference table: | `name` | type | ...
var metricRow = regexp.MustCompile("^\\| `(meshca_[a-z0-9_]+)` \\| ([a-z]+) \\|")

// metricName matches a name of meshca's metric families anywhere in the
// documentation (database names such as meshca_root are not metrics).
var metricName = regexp.MustCompile(`\bmeshca_(?:ready|(?:issuer|ca|crl|store|audit|root|agent)_[a-z0-9_]*[a-z0-9])\b`)

// referencedMetrics returns the metrics the reference table lists, by name,
// with their types.
func referencedMetrics(t *testing.T) map[string]string {
	t.Helper()
	data, err := os.ReadFile("reference/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	types := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		m := metricRow.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		if _, dup := types[m[1]]; dup {
			t.Errorf("metrics reference lists %s twice", m[1])
		}
		types[m[1]] = m[2]
	}
	if len(types) < 20 {
		t.Fatalf("metrics reference table has %d rows: its format changed", len(types))
	}
	return types
}

// TestMetricsReferenceNaming holds the metrics table to Prometheus naming:
// counters end in _total, histograms are listed by base name, and every
// type is one meshca uses.
func TestMetricsReferenceNaming(t *testing.T) {
	for name, typ := range referencedMetrics(t) {
		switch typ {
		case "counter":
			if !strings.HasSuffix(name, "_total") {
				t.Errorf("counter %s does not end in _total", name)
			}
		case "histogram":
			for _, s := range []string{"_bucket", "_sum", "_count", "_total"} {
				if strings.HasSuffix(name, s) {
					t.Errorf("histogram %s is not listed by its base name", name)
				}
			}
		case "gauge":
			if strings.HasSuffix(name, "_total") {
				t.Errorf("gauge %s ends in _total", name)
			}
		default:
			t.Errorf("%s has type %q, want counter, gauge or histogram", name, typ)
		}
	}
}

// TestDocumentedMetricsExist fails for a meshca metric named anywhere in the
// README or the documentation that the metrics reference does not list, so
// that a renamed metric cannot live on in a runbook or a query.
func TestDocumentedMetricsExist(t *testing.T) {
	types := referencedMetrics(t)
	for _, file := range markdownFiles(t) {
		data, err := os.ReadFile(filepath.Join("..", file))
		if err != nil {
			t.Fatal(err)
		}
		text := string(data)
		for _, loc := range metricName.FindAllStringIndex(text, -1) {
			name := text[loc[0]:loc[1]]
			if strings.HasPrefix(text[loc[1]:], "_*") {
				continue // a family, such as meshca_issuer_*
			}
			base := name
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				if b, ok := strings.CutSuffix(name, s); ok && types[b] == "histogram" {
					base = b
				}
			}
			if _, ok := types[base]; !ok {
				t.Errorf("%s names %s, which the metrics reference does not list", file, name)
			}
		}
	}
}

// runbookAlerts are the alerts the runbooks cover, one section each.
var runbookAlerts = []string{
	"MeshcaRootCAExpiringSoon", "MeshcaIntermediateExpiringSoon", "MeshcaCredentialExpiringSoon",
	"MeshcaIssuanceErrorRatioHigh", "MeshcaAgentRenewalStalled", "MeshcaStoreErrors",
	"MeshcaCRLPastNextUpdate", "MeshcaNotReady",
}

// alertRule matches an alerting rule's name in a Prometheus rules file or
// PrometheusRule manifest.
var alertRule = regexp.MustCompile(`(?m)^\s*-?\s*alert:\s*"?([A-Za-z0-9_]+)"?`)

// TestRunbooks fails unless the runbooks have exactly one "## <alert>"
// section per alert, and, where alert rules exist in deploy/observability,
// unless every rule there has its section and every section its rule.
func TestRunbooks(t *testing.T) {
	data, err := os.ReadFile("runbooks.md")
	if err != nil {
		t.Fatal(err)
	}
	var sections []string
	for _, line := range strings.Split(string(data), "\n") {
		if name, ok := strings.CutPrefix(line, "## "); ok {
			sections = append(sections, strings.TrimSpace(name))
		}
	}
	want := slices.Clone(runbookAlerts)
	rules, _ := filepath.Glob("../deploy/observability/*.y*ml")
	fromRules := map[string]bool{}
	for _, f := range rules {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range alertRule.FindAllStringSubmatch(string(b), -1) {
			fromRules[m[1]] = true
		}
	}
	for name := range fromRules {
		if !slices.Contains(want, name) {
			want = append(want, name)
		}
	}
	for _, name := range want {
		if n := count(sections, name); n != 1 {
			t.Errorf("runbooks.md has %d sections ## %s, want 1", n, name)
		}
	}
	for _, s := range sections {
		if !slices.Contains(want, s) {
			t.Errorf("runbooks.md has a section ## %s for no alert", s)
		}
	}
	if len(fromRules) > 0 {
		for _, name := range runbookAlerts {
			if !fromRules[name] {
				t.Errorf("runbook for %s, but no rule in deploy/observability defines it", name)
			}
		}
	}
}

func count(list []string, s string) int {
	n := 0
	for _, x := range list {
		if x == s {
			n++
		}
	}
	return n
}
