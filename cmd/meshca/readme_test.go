package main

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/meshca/meshca/store/postgres/pgtest"
)

func readme(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// The README's `meshca migrate` sample shows what the command prints on a
// new database and on a current one.
func TestReadmeMigrateSample(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	text := readme(t)
	for i := range 2 {
		out, err := runCommand(t, "migrate", "--store-dsn", dsn)
		if err != nil {
			t.Fatal(err)
		}
		line := strings.TrimSpace(out)
		if !strings.Contains(text, "\n# "+line+"\n") {
			t.Errorf("README has no sample line %q (migrate run %d)", "# "+line, i+1)
		}
	}
}

// The README's `meshca admin cluster add` sample has the rows the command
// prints, in its order.
func TestReadmeClusterAddSample(t *testing.T) {
	cfg := runRootStack(t)
	out, err := runCommand(t, "admin", "--socket", cfg.AdminSocketPath(), "cluster", "add", "east", "--trust-domain", "east.example")
	if err != nil {
		t.Fatal(err)
	}
	label := regexp.MustCompile(`^([a-z0-9 ]+?) {2,}`)
	var printed []string
	for line := range strings.SplitSeq(strings.TrimSpace(out), "\n") {
		m := label.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("cluster add printed %q, not a table row", line)
		}
		printed = append(printed, m[1])
	}
	text := readme(t)
	at := strings.Index(text, "cluster add east --trust-domain east.example\n")
	if at < 0 {
		t.Fatal("README has no cluster add sample")
	}
	var sample []string
	for line := range strings.SplitSeq(text[at:], "\n") {
		if !strings.HasPrefix(line, "# ") {
			if len(sample) > 0 {
				break
			}
			continue
		}
		if m := label.FindStringSubmatch(strings.TrimPrefix(line, "# ")); m != nil {
			sample = append(sample, m[1])
		}
	}
	if strings.Join(sample, "|") != strings.Join(printed, "|") {
		t.Errorf("README cluster add sample rows %q, the command prints %q", sample, printed)
	}
}

// Every relative link in the README points at a file in the repository
// (not, say, at a design directory beside the checkout).
func TestReadmeLinksStayInRepository(t *testing.T) {
	link := regexp.MustCompile(`\]\(([^)#\s]+)(?:#[^)]*)?\)`)
	n := 0
	for _, m := range link.FindAllStringSubmatch(readme(t), -1) {
		target := m[1]
		if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
			continue
		}
		n++
		if strings.HasPrefix(target, "../") || strings.HasPrefix(target, "/") {
			t.Errorf("README links outside the repository: %s", target)
			continue
		}
		if _, err := os.Stat("../../" + target); err != nil {
			t.Errorf("README link %s: %v", target, err)
		}
	}
	if n == 0 {
		t.Fatal("no relative links found in the README; is the pattern right?")
	}
}
