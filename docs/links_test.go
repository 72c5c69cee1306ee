// Package docs holds meshca's documentation. Its test keeps the relative
// links of the documentation and the README pointing at files that exist,
// and at headings that exist in them.
package docs

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// link matches an inline Markdown link or image: [text](target).
var link = regexp.MustCompile(`\]\(([^()\s]+)\)`)

// explicitAnchor matches an HTML anchor a document defines itself.
var explicitAnchor = regexp.MustCompile(`<a (?:id|name)="([^"]+)"`)

// markdownFiles returns README.md and every .md file under docs/, as paths
// relative to the repository root.
func markdownFiles(t *testing.T) []string {
	t.Helper()
	files := []string{"README.md"}
	err := filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(path, ".md") {
			files = append(files, filepath.Join("docs", path))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// prose returns the lines of a Markdown document outside fenced code
// blocks, with inline code spans removed: links are only links there.
func prose(doc string) []string {
	var out []string
	fenced := false
	for _, line := range strings.Split(doc, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			fenced = !fenced
			continue
		}
		if fenced {
			continue
		}
		out = append(out, stripCode(line))
	}
	return out
}

// stripCode removes inline code spans but keeps a span that is a link's
// text ([`x`](y)), since the link itself is real.
func stripCode(line string) string {
	var b strings.Builder
	for {
		i := strings.IndexByte(line, '`')
		if i < 0 {
			return b.String() + line
		}
		j := strings.IndexByte(line[i+1:], '`')
		if j < 0 {
			return b.String() + line
		}
		b.WriteString(line[:i])
		if strings.HasSuffix(b.String(), "[") {
			b.WriteString("code")
		}
		line = line[i+j+2:]
	}
}

// slug is GitHub's anchor for a heading: lower case, punctuation dropped,
// spaces turned into hyphens.
func slug(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r > 127:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// anchors returns every anchor the Markdown document at path defines.
func anchors(t *testing.T, path string) map[string]bool {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	seen := map[string]int{}
	fenced := false
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			fenced = !fenced
		}
		if fenced {
			continue
		}
		for _, m := range explicitAnchor.FindAllStringSubmatch(line, -1) {
			out[m[1]] = true
		}
		if !strings.HasPrefix(line, "#") {
			continue
		}
		s := slug(strings.TrimSpace(strings.TrimLeft(line, "#")))
		if n := seen[s]; n > 0 {
			out[s+"-"+strconv.Itoa(n)] = true
		} else {
			out[s] = true
		}
		seen[s]++
	}
	return out
}

// TestRelativeLinks fails for every relative link in the README or the docs
// whose file does not exist, that leaves the repository, or whose anchor is
// not a heading of its target.
func TestRelativeLinks(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, file := range markdownFiles(t) {
		data, err := os.ReadFile(filepath.Join(root, file))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range prose(string(data)) {
			for _, m := range link.FindAllStringSubmatch(line, -1) {
				target := m[1]
				if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
					continue
				}
				checked++
				checkLink(t, root, file, target)
			}
		}
	}
	if checked < 20 {
		t.Fatalf("checked only %d relative links: the link pattern no longer matches the documents", checked)
	}
}

func checkLink(t *testing.T, root, file, target string) {
	t.Helper()
	path, anchor, _ := strings.Cut(target, "#")
	dest := filepath.Join(root, file)
	if path != "" {
		dest = filepath.Join(root, filepath.Dir(file), path)
	}
	rel, err := filepath.Rel(root, dest)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		t.Errorf("%s: link %q leaves the repository", file, target)
		return
	}
	if _, err := os.Stat(dest); err != nil {
		t.Errorf("%s: link %q: %s does not exist", file, target, rel)
		return
	}
	if anchor != "" && strings.HasSuffix(dest, ".md") && !anchors(t, dest)[anchor] {
		t.Errorf("%s: link %q: %s has no heading for #%s", file, target, rel, anchor)
	}
}
