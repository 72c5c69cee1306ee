package e2e

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// repoRoot is the checkout, seen from this package's directory.
const repoRoot = "../.."

// TestGitignoreCoversWhatTheDocsCreate: every file and directory that the
// steps in README.md and deploy/examples/ create in the working directory is ignored
// by the checkout's .gitignore, and the quick start, followed in a git
// checkout, leaves nothing for `git add .` to pick up.
func TestGitignoreCoversWhatTheDocsCreate(t *testing.T) {
	work := t.TempDir()
	gitIn(t, work, "init", "-q")
	writeFile(t, filepath.Join(work, ".gitignore"), string(readFile(t, filepath.Join(repoRoot, ".gitignore"))))

	paths := documentedPaths(t)
	// The parser must at least find the quick start's own files.
	for _, want := range []string{".meshca-dev", "token.jwt", "certs"} {
		if !slices.Contains(paths, want) {
			t.Fatalf("found %q in README.md and deploy/examples/, not the quick start's %q", paths, want)
		}
	}
	t.Logf("documented paths: %q", paths)
	var args []string
	for _, p := range paths {
		args = append(args, p, p+"/file") // a file, or anything inside a directory
	}
	ignored := strings.Fields(gitIn(t, work, append([]string{"check-ignore"}, args...)...))
	for _, p := range paths {
		if !slices.Contains(ignored, p) && !slices.Contains(ignored, p+"/file") {
			t.Errorf("%s, which the documented steps create, is not in .gitignore", p)
		}
	}

	srv := startDev(t, devOptions{Dir: work})
	checkBannerSteps(t, srv)
	if status := gitIn(t, work, "status", "--porcelain", "--untracked-files=all", "--", ".", ":!.gitignore"); status != "" {
		t.Errorf("after the quick start, git status shows:\n%s", status)
	}
}

// gitIn runs git in dir, without the user's or the system's configuration
// (a global excludes file would hide a missing entry), and returns stdout.
func gitIn(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1")
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return string(out)
}

var (
	// backtickedRelPath is a `./path` in README prose.
	backtickedRelPath = regexp.MustCompile("`(\\./[^`\\s]+)`")
	// yamlRelPath is a relative path a deploy config keeps state in.
	yamlRelPath = regexp.MustCompile(`(?m)^\s*(?:dataDir|joinTokenFile|dir|keyFile):\s*(\.[^\s#]*)`)
)

// pathFlags are the flags whose value a command creates.
var pathFlags = []string{"--out", "--data-dir", "--sds-socket", "--workload-socket", "--socket"}

// documentedPaths returns the relative paths that the steps in README.md
// and deploy/examples/*.yaml create: redirect targets and the values of pathFlags
// in shell commands, `./` paths in the README's prose, and the relative
// state paths of the deploy configs.
func documentedPaths(t *testing.T) []string {
	t.Helper()
	var paths []string
	add := func(p string) {
		p = strings.Trim(p, `"'`)
		if p == "" || filepath.IsAbs(p) || strings.ContainsAny(p, "$…") || p == strings.ToUpper(p) {
			return // absolute, a variable or a placeholder such as DIR
		}
		if p = filepath.Clean(p); !slices.Contains(paths, p) {
			paths = append(paths, p)
		}
	}
	readme := string(readFile(t, filepath.Join(repoRoot, "README.md")))
	inBlock := false
	var cmdline string
	sc := bufio.NewScanner(strings.NewReader(readme))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			inBlock = !inBlock
			continue
		}
		if !inBlock {
			for _, m := range backtickedRelPath.FindAllStringSubmatch(line, -1) {
				add(m[1])
			}
			continue
		}
		if cont, ok := strings.CutSuffix(line, `\`); ok {
			cmdline += cont + " "
			continue
		}
		shellPaths(cmdline+line, add)
		cmdline = ""
	}
	configs, err := filepath.Glob(filepath.Join(repoRoot, "deploy", "examples", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range configs {
		text := string(readFile(t, f))
		for _, m := range yamlRelPath.FindAllStringSubmatch(text, -1) {
			add(m[1])
		}
		// Commands shown in comments.
		for _, line := range strings.Split(text, "\n") {
			if c, ok := strings.CutPrefix(strings.TrimSpace(line), "#"); ok {
				shellPaths(c, add)
			}
		}
	}
	return paths
}

// shellPaths calls add with what the shell command line creates: the
// target of a > redirect and the values of pathFlags.
func shellPaths(cmdline string, add func(string)) {
	if i := strings.Index(cmdline, " #"); i >= 0 {
		cmdline = cmdline[:i]
	}
	words := strings.Fields(cmdline)
	for i, w := range words {
		switch {
		case (w == ">" || slices.Contains(pathFlags, w)) && i+1 < len(words):
			add(words[i+1])
		case strings.HasPrefix(w, ">") && len(w) > 1:
			add(w[1:])
		}
	}
}
