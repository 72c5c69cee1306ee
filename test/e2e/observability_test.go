package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/test/harness"
	"github.com/meshca/meshca/test/promtest"
)

// metricsReference is the metric reference, relative to this package.
const metricsReference = "../../docs/reference/metrics.md"

// observedRootHost is the root's serving name in these tests; issuers keep
// 127.0.0.1 and localhost.
const observedRootHost = "meshca-root.internal"

// TestMetricNamesExist starts a root (`meshca root serve`, file key), an
// issuer enrolled with it (`meshca issuer serve`) and an agent (the
// meshca-agent sidecar binary) that got a certificate, scrapes the
// /metrics of each, and checks that every meshca metric an alert or a
// dashboard panel uses is exported by one of them, and that the metric
// reference documents exactly the meshca metrics they export.
func TestMetricNamesExist(t *testing.T) {
	r := startObservedRoot(t)
	is := startObservedIssuer(t, r, "east", "east.example")
	agentMetrics := startObservedAgent(t, is, r.bundle)

	targets := map[string]string{"root": r.metrics, "issuer": is.metrics, "agent": agentMetrics}
	used, documented := usedMetricNames(t), documentedMetrics(t)
	// Some series appear a little after start: the root exports a
	// cluster's series from its next re-evaluation (every 10 s) after the
	// enrolment. Scrape until every name is there, or metricsWait passes.
	var exported promtest.Families
	deadline := time.Now().Add(metricsWait)
	for {
		exported = scrapeFamilies(t, targets)
		if (allExported(exported, used) && allExported(exported, map[string][]string{"": documented})) || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}

	for use, names := range used {
		for _, n := range names {
			if _, ok := exported.Family(n); !ok {
				t.Errorf("%s uses %s, which no running root, issuer or agent exports", use, n)
			}
		}
	}

	var meshca []string
	for n := range exported {
		if strings.HasPrefix(n, "meshca_") {
			meshca = append(meshca, n)
		}
	}
	slices.Sort(meshca)
	for _, n := range meshca {
		if !slices.Contains(documented, n) {
			t.Errorf("%s is exported but not in docs/reference/metrics.md", n)
		}
	}
	for _, n := range documented {
		if !slices.Contains(meshca, n) {
			t.Errorf("docs/reference/metrics.md documents %s, which no running root, issuer or agent exports", n)
		}
	}
}

// metricsWait bounds the wait for every metric to appear: two of the
// root's re-evaluations and a busy machine.
const metricsWait = 30 * time.Second

// scrapeFamilies scrapes each named /metrics endpoint and returns the
// union of their families; each must export meshca_ready.
func scrapeFamilies(t *testing.T, targets map[string]string) promtest.Families {
	t.Helper()
	all := promtest.Families{}
	for name, addr := range targets {
		text, err := promtest.Scrape(context.Background(), "http://"+addr+"/metrics")
		if err != nil {
			t.Fatalf("scrape the %s: %v", name, err)
		}
		fams := promtest.ParseFamilies(text)
		if _, ok := fams["meshca_ready"]; !ok {
			t.Fatalf("the %s exports no meshca_ready", name)
		}
		all.Add(fams)
	}
	return all
}

// allExported says whether every name in names belongs to a family of fs.
func allExported(fs promtest.Families, names map[string][]string) bool {
	for _, ns := range names {
		for _, n := range ns {
			if _, ok := fs.Family(n); !ok {
				return false
			}
		}
	}
	return true
}

// usedMetricNames maps "alert NAME" and "dashboard panel TITLE" to the
// meshca metric (series) names its expression uses.
func usedMetricNames(t *testing.T) map[string][]string {
	t.Helper()
	rules, err := promtest.LoadRules(promtest.RulesFile)
	if err != nil {
		t.Fatal(err)
	}
	dash, err := promtest.LoadDashboard(promtest.DashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	used := map[string][]string{}
	for _, a := range rules.Alerts() {
		used["alert "+a.Alert] = promtest.MetricNames(a.Expr)
	}
	for _, q := range dash.Queries {
		key := fmt.Sprintf("dashboard panel %q", q.Panel)
		used[key] = append(used[key], promtest.MetricNames(q.Expr)...)
	}
	for _, v := range dash.Variables {
		used["dashboard variable "+v] = promtest.MetricNames(v)
	}
	if len(used) < len(rules.Alerts())+len(dash.Panels) {
		t.Fatalf("found %d expressions, want one per alert (%d) and at least one per panel (%d)",
			len(used), len(rules.Alerts()), len(dash.Panels))
	}
	return used
}

// referenceRow is a row of a metric table in the reference: its first
// column is the metric name in backticks.
var referenceRow = regexp.MustCompile("^\\|\\s*`(meshca_[a-z0-9_]+)`\\s*\\|")

// documentedMetrics returns the metric names of the reference's tables,
// sorted and without repeats.
func documentedMetrics(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(metricsReference)
	if err != nil {
		t.Fatalf("the metric reference: %v", err)
	}
	var names []string
	for line := range strings.Lines(string(b)) {
		if m := referenceRow.FindStringSubmatch(strings.TrimSpace(line)); m != nil {
			names = append(names, m[1])
		}
	}
	if len(names) == 0 {
		t.Fatalf("%s has no table rows naming meshca metrics", metricsReference)
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// TestPrometheusAlertFiresAndClears runs a real Prometheus server with
// deploy/observability/alerts.yaml, scraping `meshca dev` and an agent of
// 2-second certificates. Stopping the issuer lets the agent's certificate
// expire: the agent turns not ready and MeshcaNotReady fires for it.
// Starting the issuer again lets the agent renew: the alert clears.
func TestPrometheusAlertFiresAndClears(t *testing.T) {
	work := t.TempDir()
	writeFile(t, filepath.Join(work, "dev.yaml"), "leafTTL: 1h\nleafMinTTL: 1s\n")
	metricsAddr := testkit.FreeAddr(t)
	opts := devOptions{Dir: work, Addr: testkit.FreeAddr(t),
		Args: []string{"--config", filepath.Join(work, "dev.yaml"), "--metrics-listen", metricsAddr}}
	srv := startDev(t, opts)
	_, tokenFile := mintToken(t, srv.Dir, "token")
	a := startAgent(t, srv, tokenFile, 2*time.Second)

	// Only the `for` durations are changed (minutes to 2 s): expressions,
	// labels and thresholds are the shipped ones.
	rules, err := promtest.LoadRules(promtest.RulesFile)
	if err != nil {
		t.Fatal(err)
	}
	rulesFile, err := rules.WithFor(2 * time.Second).Write(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	prom := promtest.Start(t, promtest.Config{
		Jobs:      map[string][]string{"meshca-issuer": {metricsAddr}, "meshca-agent": {a.HealthAddr}},
		RuleFiles: []string{rulesFile},
		Interval:  time.Second,
	})

	ctx := context.Background()
	waitQuery(t, prom, `meshca_ready{job="meshca-agent",component="agent"} == 1`, "the agent scraped and ready")
	waitQuery(t, prom, `meshca_ready{job="meshca-issuer"} == 1`, "the issuer scraped and ready")
	if al, err := agentNotReadyAlert(ctx, prom); err != nil || al != nil {
		t.Fatalf("MeshcaNotReady for the agent before anything failed: %+v, %v", al, err)
	}

	srv.Stop(t, syscall.SIGTERM)
	var firing *promtest.Alert
	waitAlert(t, prom, "MeshcaNotReady firing for the agent once its certificate expired", func(al *promtest.Alert) bool {
		firing = al
		return al != nil && al.State == "firing"
	})
	if code, body := a.waitReadyz(t, http.StatusServiceUnavailable); code != http.StatusServiceUnavailable {
		t.Errorf("the alert fires but the agent's /readyz says %d %q", code, body)
	}
	if got, want := firing.Annotations["runbook_url"], "https://github.com/meshca/meshca/blob/main/docs/runbooks.md#meshcanotready"; got != want {
		t.Errorf("runbook_url %q, want %q", got, want)
	}
	if firing.Labels["severity"] != "critical" || !strings.Contains(firing.Annotations["summary"], "agent") {
		t.Errorf("firing alert %+v: want severity critical and a summary naming the agent", firing)
	}

	startDev(t, opts)
	waitAlert(t, prom, "MeshcaNotReady for the agent cleared after the issuer came back", func(al *promtest.Alert) bool {
		return al == nil
	})
	waitQuery(t, prom, `meshca_ready{job="meshca-agent",component="agent"} == 1`, "the agent ready again")
}

// alertWait bounds the wait for Prometheus to see a change: scrapes and
// evaluations every second, 2 s `for`, the agent's renewal backoff (at most
// 30 s) and a busy machine.
const alertWait = 90 * time.Second

// agentNotReadyAlert returns MeshcaNotReady for the agent, pending or
// firing, or nil when there is none.
func agentNotReadyAlert(ctx context.Context, prom *promtest.Server) (*promtest.Alert, error) {
	alerts, err := prom.Alerts(ctx)
	if err != nil {
		return nil, err
	}
	for _, al := range alerts {
		if al.Labels["alertname"] == "MeshcaNotReady" && al.Labels["component"] == "agent" {
			return &al, nil
		}
	}
	return nil, nil
}

// waitAlert polls the agent's MeshcaNotReady alert until cond holds.
func waitAlert(t *testing.T, prom *promtest.Server, what string, cond func(*promtest.Alert) bool) {
	t.Helper()
	testkit.Eventually(t, alertWait, what, func() error {
		al, err := agentNotReadyAlert(context.Background(), prom)
		if err != nil {
			return err
		}
		if !cond(al) {
			b, _ := json.Marshal(al)
			return fmt.Errorf("alert now: %s", b)
		}
		return nil
	})
}

// waitQuery polls an instant query until it returns a series.
func waitQuery(t *testing.T, prom *promtest.Server, expr, what string) {
	t.Helper()
	testkit.Eventually(t, alertWait, what, func() error {
		res, err := prom.Query(context.Background(), expr)
		if err != nil {
			return err
		}
		if len(res) == 0 {
			return fmt.Errorf("%s: no series", expr)
		}
		return nil
	})
}

// observedRoot is a running `meshca root serve` with its ops listener.
type observedRoot struct {
	*harness.Proc
	addr, socket, bundle, metrics string
}

// startObservedRoot starts a root with a file key and metricsListen.
func startObservedRoot(t *testing.T) *observedRoot {
	t.Helper()
	dir := t.TempDir()
	r := &observedRoot{addr: testkit.FreeAddr(t), socket: filepath.Join(dir, "admin.sock"),
		bundle: filepath.Join(dir, "bundle.pem"), metrics: testkit.FreeAddr(t)}
	cfg := harness.WriteFile(t, filepath.Join(t.TempDir(), "root.yaml"), fmt.Sprintf(
		"dataDir: %s\nlisten: %s\nadminSocket: %s\nhosts: [%q]\nissuerServingNames: [\"127.0.0.1\", \"localhost\"]\n"+
			"key:\n  kind: file\nmetricsListen: %s\n", dir, r.addr, r.socket, observedRootHost, r.metrics))
	r.Proc = harness.Start(t, meshcaBin, "root", "root", "serve", "--config", cfg)
	r.WaitListening(t, r.addr)
	r.WaitListening(t, r.metrics)
	r.WaitFor(t, "bundle.pem", harness.StartTimeout, func() bool { return fileExists(r.bundle) })
	return r
}

// issuerYAML is the configuration of an issuer of cluster (trust domain td)
// with data directory dir, serving at addr, that enrols with r using the
// join token in tokenFile and attests its own cluster's tokens with the
// dev attestor; extra, further top-level keys, is appended.
func (r *observedRoot) issuerYAML(dir, addr, cluster, td, tokenFile, extra string) string {
	return fmt.Sprintf(`dataDir: %s
listen: %s
trustDomain: %s
cluster: %s
hosts: ["127.0.0.1", "localhost"]
upstream:
  address: %s
  serverName: %s
  bundleFile: %s
  joinTokenFile: %s
clusters:
  - name: %s
    attestor: dev
%s`, dir, addr, td, cluster, r.addr, observedRootHost, r.bundle, tokenFile, cluster, extra)
}

// observedIssuer is a running `meshca issuer serve` enrolled with a root.
type observedIssuer struct {
	*harness.Proc
	addr, dir, metrics string
}

// joinTokenFile registers cluster (trust domain td) with r by `meshca admin
// cluster add`, with args added to its flags, and returns a file holding
// the join token it printed.
func (r *observedRoot) joinTokenFile(t *testing.T, cluster, td string, args ...string) string {
	t.Helper()
	out, err := harness.Run(meshcaBin, append([]string{"admin", "--socket", r.socket, "-o", "json",
		"cluster", "add", cluster, "--trust-domain", td}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	var added struct {
		JoinToken string `json:"join_token"`
	}
	if err := json.Unmarshal([]byte(out), &added); err != nil || added.JoinToken == "" {
		t.Fatalf("cluster add printed %q (%v), want a join token", out, err)
	}
	return harness.WriteFile(t, filepath.Join(t.TempDir(), "join-token"), added.JoinToken+"\n")
}

// startObservedIssuer registers cluster (trust domain td) with r and
// starts its issuer with the dev attestor and metricsListen.
func startObservedIssuer(t *testing.T, r *observedRoot, cluster, td string) *observedIssuer {
	t.Helper()
	token := r.joinTokenFile(t, cluster, td)
	is := &observedIssuer{addr: testkit.FreeAddr(t), dir: t.TempDir(), metrics: testkit.FreeAddr(t)}
	cfg := harness.WriteFile(t, filepath.Join(t.TempDir(), "issuer.yaml"),
		r.issuerYAML(is.dir, is.addr, cluster, td, token, "metricsListen: "+is.metrics+"\n"))
	is.Proc = harness.Start(t, meshcaBin, "issuer "+cluster, "issuer", "serve", "--config", cfg)
	is.WaitListening(t, is.addr)
	is.WaitListening(t, is.metrics)
	return is
}

// startObservedAgent starts the meshca-agent binary against is, trusting
// the root bundle, serving SDS and the Workload API, and waits until it is ready (it holds a certificate).
// It returns the address of its ops listener (--health-addr).
func startObservedAgent(t *testing.T, is *observedIssuer, bundle string) string {
	t.Helper()
	dir := t.TempDir()
	token, err := harness.Run(meshcaBin, "dev", "token", "--data-dir", is.dir, "--namespace", "default", "--service-account", "web")
	if err != nil {
		t.Fatal(err)
	}
	tokenFile := harness.WriteFile(t, filepath.Join(dir, "token"), token)
	health := testkit.FreeAddr(t)
	p := harness.Start(t, agentBinary(t), "agent", "--issuer", is.addr, "--server-name", "localhost", "--ca-bundle", bundle,
		"--token-file", tokenFile, "--workload-socket", filepath.Join(dir, "agent.sock"), "--sds-socket", filepath.Join(dir, "sds.sock"),
		"--health-addr", health, "--ttl", "1h")
	client := &http.Client{Timeout: time.Second}
	p.WaitFor(t, "agent ready", harness.StartTimeout, func() bool {
		resp, err := client.Get("http://" + health + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return health
}
