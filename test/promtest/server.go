package promtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/test/harness"
)

// Time bounds. The machine running tests may be busy; these are limits,
// not expectations.
const (
	readyTimeout = 60 * time.Second // until the server answers /-/ready
	callTimeout  = 10 * time.Second // one API call
	portAttempts = 3                // listen addresses tried
)

// Config says what a test Prometheus server scrapes and evaluates.
type Config struct {
	// Jobs maps a job name to the host:port targets whose /metrics it
	// scrapes.
	Jobs map[string][]string
	// RuleFiles are loaded at start.
	RuleFiles []string
	// Interval is both the scrape and the rule evaluation interval.
	// Zero means one second.
	Interval time.Duration
}

// Server is a prometheus server on 127.0.0.1 with its storage in a
// temporary directory; it is stopped at the end of the test.
type Server struct {
	// Addr is its host:port.
	Addr string

	proc *harness.Proc
}

// configFile is prometheus.yml.
type configFile struct {
	Global struct {
		ScrapeInterval     string `json:"scrape_interval"`
		ScrapeTimeout      string `json:"scrape_timeout"`
		EvaluationInterval string `json:"evaluation_interval"`
	} `json:"global"`
	RuleFiles     []string       `json:"rule_files,omitempty"`
	ScrapeConfigs []scrapeConfig `json:"scrape_configs"`
}

type scrapeConfig struct {
	JobName       string `json:"job_name"`
	StaticConfigs []struct {
		Targets []string `json:"targets"`
	} `json:"static_configs"`
}

// Start starts the server (binary from Prometheus) and waits until it is
// ready. The test fails if it cannot start; its log is shown when the test
// fails.
func Start(tb testing.TB, cfg Config) *Server {
	tb.Helper()
	bin := Prometheus(tb)
	dir := tb.TempDir()
	configPath := filepath.Join(dir, "prometheus.yml")
	if err := writeConfig(configPath, cfg); err != nil {
		tb.Fatal(err)
	}
	for attempt := 1; ; attempt++ {
		s, err := launch(tb, bin, configPath, filepath.Join(dir, fmt.Sprintf("data-%d", attempt)))
		if err == nil {
			return s
		}
		if attempt >= portAttempts || !strings.Contains(err.Error(), "address already in use") {
			tb.Fatalf("start prometheus: %v", err)
		}
	}
}

func writeConfig(path string, cfg Config) error {
	interval := cfg.Interval
	if interval == 0 {
		interval = time.Second
	}
	var f configFile
	f.Global.ScrapeInterval = interval.String()
	f.Global.ScrapeTimeout = interval.String()
	f.Global.EvaluationInterval = interval.String()
	f.RuleFiles = cfg.RuleFiles
	for job, targets := range cfg.Jobs {
		sc := scrapeConfig{JobName: job}
		sc.StaticConfigs = append(sc.StaticConfigs, struct {
			Targets []string `json:"targets"`
		}{targets})
		f.ScrapeConfigs = append(f.ScrapeConfigs, sc)
	}
	b, err := yaml.Marshal(f)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

func launch(tb testing.TB, bin, configPath, dataDir string) (*Server, error) {
	tb.Helper()
	s := &Server{Addr: testkit.FreeAddr(tb)}
	s.proc = harness.Start(tb, bin, "prometheus", "--config.file="+configPath, "--storage.tsdb.path="+dataDir,
		"--web.listen-address="+s.Addr, "--log.level=info")
	if err := s.waitReady(); err != nil {
		return nil, fmt.Errorf("%w\n%s", err, s.proc.Output())
	}
	return s, nil
}

func (s *Server) waitReady() error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(readyTimeout)
	for {
		if resp, err := client.Get("http://" + s.Addr + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-s.proc.Done():
			return fmt.Errorf("prometheus exited: %v", s.proc.Err())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("prometheus not ready within %v", readyTimeout)
		}
	}
}

// Output is what the server logged so far.
func (s *Server) Output() string { return s.proc.Output() }

// Alert is one alert of /api/v1/alerts.
type Alert struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	// State is "pending" or "firing".
	State string `json:"state"`
}

// Alerts returns the pending and firing alerts.
func (s *Server) Alerts(ctx context.Context) ([]Alert, error) {
	var data struct {
		Alerts []Alert `json:"alerts"`
	}
	err := s.get(ctx, "/api/v1/alerts", &data)
	return data.Alerts, err
}

// Sample is one series of an instant query's result.
type Sample struct {
	Metric map[string]string `json:"metric"`
	// Value is [timestamp, "value"].
	Value [2]any `json:"value"`
}

// Query evaluates an instant PromQL query now.
func (s *Server) Query(ctx context.Context, expr string) ([]Sample, error) {
	var data struct {
		ResultType string   `json:"resultType"`
		Result     []Sample `json:"result"`
	}
	if err := s.get(ctx, "/api/v1/query?query="+url.QueryEscape(expr), &data); err != nil {
		return nil, err
	}
	if data.ResultType != "vector" {
		return nil, fmt.Errorf("query %q: result type %q, want vector", expr, data.ResultType)
	}
	return data.Result, nil
}

// get calls the HTTP API and decodes the data of a successful answer.
func (s *Server) get(ctx context.Context, path string, data any) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.Addr+path, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var body struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return fmt.Errorf("GET %s: %s: %w", path, resp.Status, err)
	}
	if body.Status != "success" {
		return fmt.Errorf("GET %s: %s: %s", path, resp.Status, body.Error)
	}
	if len(body.Data) == 0 {
		return errors.New("GET " + path + ": no data")
	}
	return json.Unmarshal(body.Data, data)
}
