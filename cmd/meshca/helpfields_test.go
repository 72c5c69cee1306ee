package main

import (
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// configRef is a dotted config field in help text, such as
// upstream.joinTokenFile; one after a '/' or a letter is a file name
// (DATA_DIR/admin.sock) or part of a longer word.
var configRef = regexp.MustCompile(`(?:^|[^/\w.])([a-z][A-Za-z]*(?:\.[a-z][A-Za-z]*)+)\b`)

// notConfig are last segments that make a dotted word a file or host name
// (key.pem, cluster.local), not a config field.
var notConfig = map[string]bool{"pem": true, "json": true, "yaml": true, "sock": true, "db": true, "local": true, "example": true, "svc": true}

// jsonField returns the field of struct type t whose JSON name is name.
func jsonField(t reflect.Type, name string) (reflect.Type, bool) {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil, false
	}
	for i := range t.NumField() {
		f := t.Field(i)
		if n, _, _ := strings.Cut(f.Tag.Get("json"), ","); n == name {
			return f.Type, true
		}
	}
	return nil, false
}

// resolves reports whether the dotted path names a field of t.
func resolves(t reflect.Type, path string) bool {
	for seg := range strings.SplitSeq(path, ".") {
		next, ok := jsonField(t, seg)
		if !ok {
			return false
		}
		t = next
	}
	return true
}

// TestHelpNamesRealConfigFields: every dotted config field that a help text
// names (upstream.joinTokenFile, admin.spiffeIDs, ...) exists in the
// issuer's, the root's or the dev config, so that help cannot send an
// operator to a field that is not there (as root.joinTokenFile once did).
func TestHelpNamesRealConfigFields(t *testing.T) {
	configs := []reflect.Type{
		reflect.TypeFor[issuerConfig](), reflect.TypeFor[rootConfig](), reflect.TypeFor[devConfig](),
	}
	topLevel := func(name string) bool {
		for _, c := range configs {
			if _, ok := jsonField(c, name); ok {
				return true
			}
		}
		return false
	}
	checked := 0
	var walk func(cmd *cobra.Command)
	walk = func(cmd *cobra.Command) {
		texts := []string{cmd.Short, cmd.Long}
		cmd.Flags().VisitAll(func(f *pflag.Flag) { texts = append(texts, f.Usage) })
		for _, text := range texts {
			for _, m := range configRef.FindAllStringSubmatch(text, -1) {
				path := m[1]
				first, _, _ := strings.Cut(path, ".")
				if !topLevel(first) || notConfig[path[strings.LastIndex(path, ".")+1:]] {
					continue
				}
				checked++
				ok := false
				for _, c := range configs {
					ok = ok || resolves(c, path)
				}
				if !ok {
					t.Errorf("%q help names %s, which no config has", cmd.CommandPath(), path)
				}
			}
		}
		for _, sub := range cmd.Commands() {
			walk(sub)
		}
	}
	walk(newCLI())
	if checked < 3 {
		t.Fatalf("only %d config field references found in help texts; is the pattern right?", checked)
	}
	// The pattern finds the reference this test exists for.
	if m := configRef.FindStringSubmatch("in the issuer's root.joinTokenFile;"); m == nil || resolves(configs[0], m[1]) {
		t.Errorf("root.joinTokenFile: match %v, want found and not resolving", m)
	}
}
