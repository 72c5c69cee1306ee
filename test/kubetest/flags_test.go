package kubetest

import (
	"slices"
	"testing"
)

func TestWithFlags(t *testing.T) {
	args := []string{"--a=1", "--authorization-mode=RBAC", "--b=2"}
	for name, tc := range map[string]struct {
		extra, want []string
	}{
		"none":    {want: args},
		"added":   {extra: []string{"--c=3"}, want: []string{"--a=1", "--authorization-mode=RBAC", "--b=2", "--c=3"}},
		"replace": {extra: []string{"--authorization-mode=Node,RBAC"}, want: []string{"--a=1", "--b=2", "--authorization-mode=Node,RBAC"}},
		"prefix":  {extra: []string{"--a-b=4"}, want: []string{"--a=1", "--authorization-mode=RBAC", "--b=2", "--a-b=4"}},
	} {
		t.Run(name, func(t *testing.T) {
			if got := withFlags(slices.Clone(args), tc.extra); !slices.Equal(got, tc.want) {
				t.Errorf("withFlags(%q) = %q, want %q", tc.extra, got, tc.want)
			}
		})
	}
}
