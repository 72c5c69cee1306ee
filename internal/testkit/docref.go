package testkit

import (
	"bufio"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// ConfigFieldNames returns the YAML names of every field of the struct cfg,
// nested ones dotted (store.retention.grace) and the fields of list
// entries after "[]." (clusters[].name), parents before their fields, in
// declaration order. Names come from the json tags, which the strict YAML
// decoder uses; a field without one is not configurable and is left out.
func ConfigFieldNames(cfg any) []string {
	var names []string
	walkConfig(reflect.TypeOf(cfg), "", &names)
	return names
}

func walkConfig(t reflect.Type, prefix string, names *[]string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		path := prefix + name
		*names = append(*names, path)
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		switch {
		case ft.Kind() == reflect.Struct:
			walkConfig(ft, path+".", names)
		case ft.Kind() == reflect.Slice && structElem(ft.Elem()):
			walkConfig(ft.Elem(), path+"[].", names)
		}
	}
}

func structElem(t reflect.Type) bool {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t.Kind() == reflect.Struct
}

// DocTableKeys returns the first cell of every table row in the section of
// the Markdown file path whose "## " heading starts with heading, up to
// the next "## " heading, for rows whose first cell is one code span
// (| `name` | ...). It fails t when the file or the section is missing.
func DocTableKeys(t testing.TB, path, heading string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("reference: %v", err)
	}
	defer f.Close()
	var keys []string
	in, found := false, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "## ") {
			in = strings.HasPrefix(line, "## "+heading)
			found = found || in
			continue
		}
		if !in || !strings.HasPrefix(line, "| `") {
			continue
		}
		cell, _, _ := strings.Cut(strings.TrimPrefix(line, "|"), "|")
		cell = strings.TrimSpace(cell)
		if len(cell) > 2 && strings.Count(cell, "`") == 2 && strings.HasSuffix(cell, "`") {
			keys = append(keys, strings.Trim(cell, "`"))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("reference %s: %v", path, err)
	}
	if !found {
		t.Fatalf("reference %s has no section %q", path, "## "+heading)
	}
	return keys
}

// SameNames fails t for every name in code but not in doc, every name in
// doc but not in code, and every name doc lists twice. what names the two
// sides in the messages.
func SameNames(t testing.TB, what string, code, doc []string) {
	t.Helper()
	seen := map[string]bool{}
	for _, d := range doc {
		if seen[d] {
			t.Errorf("%s: %q is documented twice", what, d)
		}
		seen[d] = true
		if !slices.Contains(code, d) {
			t.Errorf("%s: %q is documented but does not exist in the code", what, d)
		}
	}
	for _, c := range code {
		if !seen[c] {
			t.Errorf("%s: %q exists in the code but is not documented", what, c)
		}
	}
}
