package observability

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/meshca/meshca/test/promtest"
)

// alertNames are the alerts the documentation (docs/runbooks.md, one
// section each) and operators rely on.
var alertNames = []string{
	"MeshcaRootCAExpiringSoon",
	"MeshcaIntermediateExpiringSoon",
	"MeshcaCredentialExpiringSoon",
	"MeshcaIssuanceErrorRatioHigh",
	"MeshcaAgentRenewalStalled",
	"MeshcaStoreErrors",
	"MeshcaCRLPastNextUpdate",
	"MeshcaNotReady",
}

const runbookBase = "https://github.com/meshca/meshca/blob/main/docs/runbooks.md#"

func TestPromtoolCheckRules(t *testing.T) {
	promtool := promtest.Promtool(t)
	out, err := promtest.RunPromtool(promtool, "check", "rules", promtest.RulesFile)
	if err != nil {
		t.Fatal(err)
	}
	if want := "SUCCESS: 8 rules found"; !strings.Contains(out, want) {
		t.Errorf("promtool check rules: %q, want %q", out, want)
	}
}

// TestPromtoolTestRules runs alerts_test.yaml, and checks that it shows
// every alert both firing and not firing, so that no alert goes untested.
func TestPromtoolTestRules(t *testing.T) {
	promtool := promtest.Promtool(t)
	out, err := promtest.RunPromtool(promtool, "test", "rules", promtest.RulesTestFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "SUCCESS") {
		t.Fatalf("promtool test rules: %q, want SUCCESS", out)
	}

	var tests struct {
		RuleFiles []string `json:"rule_files"`
		Tests     []struct {
			Name  string `json:"name"`
			Cases []struct {
				Alert     string `json:"alertname"`
				ExpAlerts []any  `json:"exp_alerts"`
			} `json:"alert_rule_test"`
		} `json:"tests"`
	}
	b, err := os.ReadFile(promtest.RulesTestFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &tests); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(tests.RuleFiles, []string{filepath.Base(promtest.RulesFile)}) {
		t.Errorf("alerts_test.yaml tests %q, want only %s", tests.RuleFiles, filepath.Base(promtest.RulesFile))
	}
	firing, silent := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, c := range tc.Cases {
			if len(c.ExpAlerts) > 0 {
				firing[c.Alert] = true
			} else {
				silent[c.Alert] = true
			}
		}
	}
	for _, name := range alertNames {
		if !firing[name] || !silent[name] {
			t.Errorf("alerts_test.yaml: %s firing tested %v, not firing tested %v; want both", name, firing[name], silent[name])
		}
	}
}

// TestAlertsAreComplete checks the alert names and that every alert has a
// severity, a summary, a description and its runbook link.
func TestAlertsAreComplete(t *testing.T) {
	f, err := promtest.LoadRules(promtest.RulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, a := range f.Alerts() {
		names = append(names, a.Alert)
		if s := a.Labels["severity"]; s != "critical" && s != "warning" {
			t.Errorf("%s: severity %q, want critical or warning", a.Alert, s)
		}
		for _, key := range []string{"summary", "description"} {
			if strings.TrimSpace(a.Annotations[key]) == "" {
				t.Errorf("%s: no %s annotation", a.Alert, key)
			}
		}
		if got, want := a.Annotations["runbook_url"], runbookBase+strings.ToLower(a.Alert); got != want {
			t.Errorf("%s: runbook_url %q, want %q", a.Alert, got, want)
		}
		if a.For == "" {
			t.Errorf("%s: no `for`: one bad scrape would page", a.Alert)
		}
	}
	if !slices.Equal(sorted(names), sorted(alertNames)) {
		t.Errorf("alerts %q, want %q", names, alertNames)
	}
}

// TestRunbooksHaveASectionPerAlert checks the runbook anchors resolve once
// docs/runbooks.md exists: a "## Name" heading per alert (GitHub's anchor
// for it is the lowercased name).
func TestRunbooksHaveASectionPerAlert(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(promtest.Dir(), "..", "..", "docs", "runbooks.md"))
	if os.IsNotExist(err) {
		t.Log("docs/runbooks.md does not exist (yet); nothing to check")
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	headings := map[string]bool{}
	for line := range strings.Lines(string(b)) {
		if h, ok := strings.CutPrefix(strings.TrimSpace(line), "## "); ok {
			headings[strings.TrimSpace(h)] = true
		}
	}
	for _, name := range alertNames {
		if !headings[name] {
			t.Errorf("docs/runbooks.md has no \"## %s\" section, which the alert's runbook_url points to", name)
		}
	}
}

// TestPrometheusRuleMatchesRulesFile checks that the PrometheusRule
// manifest carries exactly the groups of alerts.yaml.
func TestPrometheusRuleMatchesRulesFile(t *testing.T) {
	var plain struct {
		Groups any `json:"groups"`
	}
	var manifest struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name   string            `json:"name"`
			Labels map[string]string `json:"labels"`
		} `json:"metadata"`
		Spec struct {
			Groups any `json:"groups"`
		} `json:"spec"`
	}
	for path, v := range map[string]any{promtest.RulesFile: &plain, promtest.PrometheusRule: &manifest} {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.UnmarshalStrict(b, v); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
	if manifest.APIVersion != "monitoring.coreos.com/v1" || manifest.Kind != "PrometheusRule" || manifest.Metadata.Name == "" {
		t.Errorf("prometheusrule.yaml: %s %s %q, want a named monitoring.coreos.com/v1 PrometheusRule",
			manifest.APIVersion, manifest.Kind, manifest.Metadata.Name)
	}
	if plain.Groups == nil || !reflect.DeepEqual(manifest.Spec.Groups, plain.Groups) {
		a, _ := yaml.Marshal(plain.Groups)
		b, _ := yaml.Marshal(manifest.Spec.Groups)
		t.Errorf("prometheusrule.yaml spec.groups differ from alerts.yaml groups:\nalerts.yaml:\n%s\nprometheusrule.yaml:\n%s", a, b)
	}
}

// dashboardMetrics are the metrics the dashboard must chart: issuance,
// attestation, store, CA lifetimes, CRLs, root, agents, SDS, readiness.
var dashboardMetrics = []string{
	"meshca_issuer_requests_total",
	"meshca_issuer_request_duration_seconds_bucket",
	"meshca_issuer_attestation_failures_total",
	"meshca_issuer_denied_total",
	"meshca_store_commit_duration_seconds_bucket",
	"meshca_store_commit_batch_size_bucket",
	"meshca_store_errors_total",
	"meshca_ca_expiry_timestamp_seconds",
	"meshca_crl_next_update_timestamp_seconds",
	"meshca_root_enrolments_total",
	"meshca_root_renewals_total",
	"meshca_root_signer_duration_seconds_bucket",
	"meshca_agent_renewals_total",
	"meshca_agent_certificate_expiry_timestamp_seconds",
	"meshca_agent_sds_streams",
	"meshca_agent_sds_pushes_total",
	"meshca_agent_sds_nacks_total",
	"meshca_ready",
}

// TestDashboard parses the dashboard, checks what it charts, and has
// promtool parse every panel query.
func TestDashboard(t *testing.T) {
	d, err := promtest.LoadDashboard(promtest.DashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	if d.Title == "" || len(d.Queries) == 0 {
		t.Fatalf("dashboard: title %q, %d queries", d.Title, len(d.Queries))
	}
	used := map[string]bool{}
	var exprs []string
	for _, q := range d.Queries {
		if strings.TrimSpace(q.Expr) == "" {
			t.Errorf("panel %q has an empty query", q.Panel)
			continue
		}
		for _, n := range promtest.MetricNames(q.Expr) {
			used[n] = true
		}
		exprs = append(exprs, promtest.ExpandGrafana(q.Expr))
	}
	for _, m := range dashboardMetrics {
		if !used[m] {
			t.Errorf("no dashboard panel charts %s", m)
		}
	}
	if err := promtest.CheckExprs(t, promtest.Promtool(t), exprs); err != nil {
		t.Errorf("dashboard queries do not parse: %v", err)
	}
}

// TestCheckExprsRejectsBadPromQL shows that the dashboard check can fail.
func TestCheckExprsRejectsBadPromQL(t *testing.T) {
	promtool := promtest.Promtool(t)
	if err := promtest.CheckExprs(t, promtool, []string{`sum(rate(meshca_ready[5m]))`}); err != nil {
		t.Fatalf("valid query refused: %v", err)
	}
	for _, bad := range []string{`sum(rate(meshca_ready[$__rate_interval]))`, `sum by (le (meshca_ready)`} {
		if err := promtest.CheckExprs(t, promtool, []string{bad}); err == nil {
			t.Errorf("promtool accepted %q", bad)
		}
	}
}

func TestExpandGrafana(t *testing.T) {
	for in, want := range map[string]string{
		`rate(x{cluster=~"$cluster"}[$__rate_interval])`:      `rate(x{cluster=~".*"}[5m])`,
		`rate(x{cluster=~"${cluster}"}[${__interval}])`:       `rate(x{cluster=~".*"}[5m])`,
		`increase(meshca_root_renewals_total[$__range])`:      `increase(meshca_root_renewals_total[5m])`,
		`histogram_quantile(0.99, sum by (le) (rate(y[1h])))`: `histogram_quantile(0.99, sum by (le) (rate(y[1h])))`,
	} {
		if got := promtest.ExpandGrafana(in); got != want {
			t.Errorf("ExpandGrafana(%q) = %q, want %q", in, got, want)
		}
	}
	if got, want := promtest.MetricNames(`a(meshca_x_bucket) / b(meshca_x_bucket, xmeshca_y) + label_values(meshca_ready, job)`),
		[]string{"meshca_ready", "meshca_x_bucket"}; !slices.Equal(got, want) {
		t.Errorf("MetricNames = %q, want %q", got, want)
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}
