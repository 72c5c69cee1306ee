package attest

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseClaims(t *testing.T) {
	cfg := JWKSConfig{Issuer: DevIssuer, Cluster: testCluster}.withDefaults()
	with := func(mod func(c, k8s map[string]any)) []byte {
		c := validClaims()
		mod(c, c["kubernetes.io"].(map[string]any))
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	valid := Identity{
		Cluster: testCluster, Namespace: "default", ServiceAccount: "web",
		PodName: "web-0", PodUID: "pod-uid", Expiry: testNow.Add(time.Hour),
	}

	tests := []struct {
		name    string
		payload []byte
		want    Identity
		wantErr string
	}{
		{name: "valid", payload: with(func(c, k map[string]any) {}), want: valid},
		{name: "aud as a string", payload: with(func(c, k map[string]any) { c["aud"] = "istio-ca" }), want: valid},
		{name: "no nbf or iat", payload: with(func(c, k map[string]any) { delete(c, "nbf"); delete(c, "iat") }), want: valid},
		{name: "extra node claim ignored", payload: with(func(c, k map[string]any) { k["node"] = map[string]any{"name": "n1", "uid": "u"} }), want: valid},
		{
			name:    "fractional exp",
			payload: with(func(c, k map[string]any) { c["exp"] = float64(testNow.Unix()) + 0.5 }),
			want:    func() Identity { id := valid; id.Expiry = testNow; return id }(),
		},
		{name: "not json", payload: []byte("{"), wantErr: "malformed token claims"},
		{name: "json array", payload: []byte("[]"), wantErr: "malformed token claims"},
		{name: "aud wrong type", payload: with(func(c, k map[string]any) { c["aud"] = 7 }), wantErr: "malformed token claims"},
		{name: "aud missing", payload: with(func(c, k map[string]any) { delete(c, "aud") }), wantErr: `token audience "" not accepted`},
		{name: "aud null", payload: with(func(c, k map[string]any) { c["aud"] = nil }), wantErr: `token audience "" not accepted`},
		{name: "aud none accepted", payload: with(func(c, k map[string]any) { c["aud"] = []string{"a", "b"} }), wantErr: `token audience "a,b" not accepted`},
		{name: "issuer missing", payload: with(func(c, k map[string]any) { delete(c, "iss") }), wantErr: `token issuer "" not accepted`},
		{name: "issuer differs by case", payload: with(func(c, k map[string]any) { c["iss"] = strings.ToUpper(DevIssuer) }), wantErr: "token issuer"},
		{name: "exp null", payload: with(func(c, k map[string]any) { c["exp"] = nil }), wantErr: "token has no expiry"},
		{name: "exp string", payload: with(func(c, k map[string]any) { c["exp"] = "tomorrow" }), wantErr: "malformed token claims"},
		{name: "exp beyond int64", payload: with(func(c, k map[string]any) { c["exp"] = 1e30 }), wantErr: "malformed token claims"},
		{name: "nbf far future", payload: with(func(c, k map[string]any) { c["nbf"] = 4e18 }), wantErr: "token not valid before"},
		{name: "exp far past", payload: with(func(c, k map[string]any) { c["exp"] = -4e18 }), wantErr: "token expired at"},
		{name: "iat beyond leeway", payload: with(func(c, k map[string]any) { c["iat"] = testNow.Add(31 * time.Second).Unix() }), wantErr: "token issued in the future"},
		{name: "subject not a service account", payload: with(func(c, k map[string]any) { c["sub"] = "system:node:n1" }), wantErr: `token subject "system:node:n1" is not a service account`},
		{name: "subject without name", payload: with(func(c, k map[string]any) { c["sub"] = "system:serviceaccount:default" }), wantErr: "is not a service account"},
		{name: "subject with extra part", payload: with(func(c, k map[string]any) { c["sub"] = "system:serviceaccount:default:web:x" }), wantErr: `invalid service account name "web:x"`},
		{name: "empty namespace", payload: with(func(c, k map[string]any) { c["sub"] = "system:serviceaccount::web" }), wantErr: `invalid namespace ""`},
		{name: "namespace too long", payload: with(func(c, k map[string]any) { c["sub"] = "system:serviceaccount:" + strings.Repeat("a", 64) + ":web" }), wantErr: "invalid namespace"},
		{name: "namespace with dot", payload: with(func(c, k map[string]any) { c["sub"] = "system:serviceaccount:a.b:web" }), wantErr: `invalid namespace "a.b"`},
		{name: "service account trailing dash", payload: with(func(c, k map[string]any) { c["sub"] = "system:serviceaccount:default:web-" }), wantErr: `invalid service account name "web-"`},
		{name: "no kubernetes.io claim", payload: with(func(c, k map[string]any) { delete(c, "kubernetes.io") }), wantErr: "token has no kubernetes.io claim"},
		{name: "kubernetes.io namespace differs", payload: with(func(c, k map[string]any) { k["namespace"] = "other" }), wantErr: `kubernetes.io namespace "other" does not match subject`},
		{name: "no service account object", payload: with(func(c, k map[string]any) { delete(k, "serviceaccount") }), wantErr: "no service account uid"},
		{name: "no service account uid", payload: with(func(c, k map[string]any) { k["serviceaccount"] = map[string]any{"name": "web"} }), wantErr: "no service account uid"},
		{name: "service account name differs", payload: with(func(c, k map[string]any) { k["serviceaccount"] = map[string]any{"name": "db", "uid": "u"} }), wantErr: `kubernetes.io service account "db" does not match`},
		{name: "pod without uid", payload: with(func(c, k map[string]any) { k["pod"] = map[string]any{"name": "web-0"} }), wantErr: "pod reference"},
		{name: "pod with invalid name", payload: with(func(c, k map[string]any) { k["pod"] = map[string]any{"name": "Web_0", "uid": "u"} }), wantErr: "pod reference"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseClaims(tc.payload, &cfg, testNow)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("parseClaims: %v", err)
				}
				if !sameIdentity(got, tc.want) {
					t.Fatalf("parseClaims = %+v\nwant          %+v", got, tc.want)
				}
				return
			}
			if !errors.Is(err, ErrUnauthenticated) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("parseClaims error = %v, want ErrUnauthenticated with %q", err, tc.wantErr)
			}
		})
	}
}

func TestDNS1123(t *testing.T) {
	tests := []struct {
		in               string
		label, subdomain bool
	}{
		{"a", true, true},
		{"default", true, true},
		{"kube-system", true, true},
		{"0abc9", true, true},
		{strings.Repeat("a", 63), true, true},
		{strings.Repeat("a", 64), false, true},
		{"web-0.ns", false, true},
		{strings.Repeat("a", 253), false, true},
		{strings.Repeat("a", 254), false, false},
		{"", false, false},
		{"-a", false, false},
		{"a-", false, false},
		{"A", false, false},
		{"a_b", false, false},
		{"a..b", false, false},
		{".a", false, false},
		{"a:b", false, false},
		{"é", false, false},
	}
	for _, tc := range tests {
		if got := isDNS1123Label(tc.in); got != tc.label {
			t.Errorf("isDNS1123Label(%q) = %t, want %t", tc.in, got, tc.label)
		}
		if got := isDNS1123Subdomain(tc.in); got != tc.subdomain {
			t.Errorf("isDNS1123Subdomain(%q) = %t, want %t", tc.in, got, tc.subdomain)
		}
	}
}
