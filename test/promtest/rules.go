package promtest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

// RuleFile is a Prometheus rules file (the format of alerts.yaml).
type RuleFile struct {
	Groups []RuleGroup `json:"groups"`
}

// RuleGroup is one group of rules.
type RuleGroup struct {
	Name     string `json:"name"`
	Interval string `json:"interval,omitempty"`
	Rules    []Rule `json:"rules"`
}

// Rule is an alerting rule (Alert set) or a recording rule (Record set).
type Rule struct {
	Alert       string            `json:"alert,omitempty"`
	Record      string            `json:"record,omitempty"`
	Expr        string            `json:"expr"`
	For         string            `json:"for,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// LoadRules reads a rules file, refusing fields Prometheus does not know.
func LoadRules(path string) (RuleFile, error) {
	var f RuleFile
	b, err := os.ReadFile(path)
	if err != nil {
		return f, err
	}
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		return f, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

// Alerts returns the alerting rules of f in file order.
func (f RuleFile) Alerts() []Rule {
	var out []Rule
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				out = append(out, r)
			}
		}
	}
	return out
}

// WithFor returns a copy of f in which every alert waits d (its `for`)
// before firing: tests that cannot wait minutes shorten it, and nothing
// else.
func (f RuleFile) WithFor(d time.Duration) RuleFile {
	out := RuleFile{}
	for _, g := range f.Groups {
		g.Rules = slices.Clone(g.Rules)
		for i := range g.Rules {
			if g.Rules[i].Alert != "" {
				g.Rules[i].For = d.String()
			}
		}
		out.Groups = append(out.Groups, g)
	}
	return out
}

// Write writes f as YAML to a new file in dir and returns its path.
func (f RuleFile) Write(dir string) (string, error) {
	b, err := yaml.Marshal(f)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "rules.yaml")
	return path, os.WriteFile(path, b, 0o600)
}

// Query is one PromQL query of a dashboard panel.
type Query struct {
	Panel, Expr string
}

// dashboard is the part of Grafana's dashboard JSON that holds queries.
type dashboard struct {
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name       string `json:"name"`
			Type       string `json:"type"`
			Definition string `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	Title   string  `json:"title"`
	Type    string  `json:"type"`
	Panels  []panel `json:"panels"` // a collapsed row's panels
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
}

// Dashboard is what a test checks of a Grafana dashboard: its title, the
// PromQL queries of its panels and its template variables' queries
// (Grafana's label_values(...), not PromQL).
type Dashboard struct {
	Title     string
	Panels    []string // titles, rows left out
	Queries   []Query
	Variables []string
}

// LoadDashboard parses a Grafana dashboard JSON file.
func LoadDashboard(path string) (Dashboard, error) {
	var d dashboard
	b, err := os.ReadFile(path)
	if err != nil {
		return Dashboard{}, err
	}
	if err := json.Unmarshal(b, &d); err != nil {
		return Dashboard{}, fmt.Errorf("%s: %w", path, err)
	}
	out := Dashboard{Title: d.Title}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if p.Type != "row" {
				out.Panels = append(out.Panels, p.Title)
			}
			for _, t := range p.Targets {
				out.Queries = append(out.Queries, Query{Panel: p.Title, Expr: t.Expr})
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Definition != "" {
			out.Variables = append(out.Variables, v.Definition)
		}
	}
	return out, nil
}

var (
	grafanaIntervals = regexp.MustCompile(`\$\{?__(rate_interval|interval|range)\}?`)
	grafanaVariable  = regexp.MustCompile(`\$\{?[A-Za-z0-9_]+\}?`)
	metricName       = regexp.MustCompile(`\bmeshca_[A-Za-z0-9_]+`)
)

// ExpandGrafana replaces Grafana's variables in a panel query by what makes
// it plain PromQL: the interval variables by 5m, every other variable (used
// in label matchers) by ".*".
func ExpandGrafana(expr string) string {
	expr = grafanaIntervals.ReplaceAllString(expr, "5m")
	return grafanaVariable.ReplaceAllString(expr, ".*")
}

// MetricNames returns the meshca_* names in s (PromQL or a Grafana variable
// query), sorted and without repeats. Histogram series keep their
// _bucket, _sum and _count suffixes.
func MetricNames(s string) []string {
	names := metricName.FindAllString(s, -1)
	slices.Sort(names)
	return slices.Compact(names)
}

// CheckExprs runs `promtool check rules` on a rules file holding one
// recording rule per expression, so that promtool's PromQL parser judges
// each. The error holds promtool's output.
func CheckExprs(tb testing.TB, promtool string, exprs []string) error {
	tb.Helper()
	f := RuleFile{Groups: []RuleGroup{{Name: "exprs"}}}
	for i, e := range exprs {
		f.Groups[0].Rules = append(f.Groups[0].Rules, Rule{Record: fmt.Sprintf("check:expr_%d", i), Expr: e})
	}
	path, err := f.Write(tb.TempDir())
	if err != nil {
		return err
	}
	_, err = RunPromtool(promtool, "check", "rules", path)
	return err
}

// toolTimeout bounds one promtool run.
const toolTimeout = 2 * time.Minute

// RunPromtool runs promtool with args and returns its combined output; a
// non-zero exit is an error holding that output.
func RunPromtool(promtool string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), toolTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, promtool, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("promtool %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}
