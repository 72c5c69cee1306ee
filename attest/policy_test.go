package attest

import (
	"context"
	"errors"
	"testing"
)

func TestPolicyCheck(t *testing.T) {
	tests := []struct {
		name    string
		cfg     PolicyConfig
		ns, sa  string
		wantErr string // "" means accepted
	}{
		{name: "empty policy allows all", ns: "shop", sa: "web"},
		{name: "exact allow", cfg: PolicyConfig{Allow: []string{"shop/web"}}, ns: "shop", sa: "web"},
		{name: "not in allow list", cfg: PolicyConfig{Allow: []string{"shop/web"}}, ns: "shop", sa: "db",
			wantErr: "not in the policy's allow list"},
		{name: "namespace wildcard allow", cfg: PolicyConfig{Allow: []string{"shop/*"}}, ns: "shop", sa: "db"},
		{name: "service account wildcard allow", cfg: PolicyConfig{Allow: []string{"*/web"}}, ns: "bank", sa: "web"},
		{name: "deny namespace", cfg: PolicyConfig{Deny: []string{"kube-system/*"}}, ns: "kube-system", sa: "coredns",
			wantErr: "denied by policy entry kube-system/*"},
		{name: "deny leaves others", cfg: PolicyConfig{Deny: []string{"kube-system/*"}}, ns: "shop", sa: "web"},
		{name: "deny wins over allow", cfg: PolicyConfig{Allow: []string{"shop/*"}, Deny: []string{"shop/admin"}},
			ns: "shop", sa: "admin", wantErr: "denied by policy entry shop/admin"},
		{name: "deny all", cfg: PolicyConfig{Deny: []string{"*/*"}}, ns: "a", sa: "b", wantErr: "denied"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := compilePolicy(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			err = p.check(tc.ns, tc.sa)
			checkUnauthenticated(t, err, tc.wantErr)
		})
	}
}

func TestPolicyConfigValidate(t *testing.T) {
	for _, bad := range []string{"", "shop", "shop/", "/web", "Shop/web", "shop/web/x", "sh*p/web", "shop/we_b"} {
		cfg := PolicyConfig{Allow: []string{bad}}
		if err := cfg.Validate(); err == nil {
			t.Errorf("Validate accepted allow entry %q", bad)
		}
		cfg = PolicyConfig{Deny: []string{bad}}
		if err := cfg.Validate(); err == nil {
			t.Errorf("Validate accepted deny entry %q", bad)
		}
	}
	good := PolicyConfig{Allow: []string{"*/*", "shop/web", "a-1/*"}, Deny: []string{"*/default"}}
	if err := good.Validate(); err != nil {
		t.Errorf("Validate(%+v) = %v", good, err)
	}
}

func TestNewPolicyWrapsAttestor(t *testing.T) {
	next := &fakeAttestor{fn: func(r Request) (Identity, error) {
		if r.Token == "bad" {
			return Identity{}, errors.Join(ErrUnavailable, errors.New("down"))
		}
		return Identity{Cluster: "c1", Namespace: "shop", ServiceAccount: r.Token}, nil
	}}
	a, err := NewPolicy(next, PolicyConfig{Deny: []string{"shop/admin"}})
	if err != nil {
		t.Fatal(err)
	}
	if id, err := a.Attest(context.Background(), Request{Token: "web"}); err != nil || id.ServiceAccount != "web" {
		t.Errorf("web: %+v, %v", id, err)
	}
	if _, err := a.Attest(context.Background(), Request{Token: "admin"}); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("admin: err = %v, want ErrUnauthenticated", err)
	}
	if _, err := a.Attest(context.Background(), Request{Token: "bad"}); !errors.Is(err, ErrUnavailable) {
		t.Errorf("unavailable attestor: err = %v, want ErrUnavailable passed through", err)
	}
	if _, err := NewPolicy(next, PolicyConfig{Allow: []string{"nope"}}); err == nil {
		t.Error("NewPolicy accepted an invalid entry")
	}
}
