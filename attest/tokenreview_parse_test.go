package attest

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// boundStatus is what a v1.37 API server answers for a valid pod-bound
// token of shop/web reviewed with audience istio-ca.
func boundStatus() authnv1.TokenReviewStatus {
	return authnv1.TokenReviewStatus{
		Authenticated: true,
		Audiences:     []string{"istio-ca"},
		User: authnv1.UserInfo{
			Username: "system:serviceaccount:shop:web",
			UID:      "7d1e2c1a-0000-4000-8000-000000000001",
			Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:shop", "system:authenticated"},
			Extra: map[string]authnv1.ExtraValue{
				extraPodName: {"web-0"},
				extraPodUID:  {"0b9c3a52-0000-4000-8000-000000000002"},
				"authentication.kubernetes.io/credential-id": {"JTI=abc"},
			},
		},
	}
}

// parseCase is one TestParseTokenReview case: boundStatus() changed by
// mutate, parsed under rules.
type parseCase struct {
	name    string
	mutate  func(*authnv1.TokenReviewStatus)
	rules   reviewRules
	want    Identity
	wantErr string // substring of the log reason; "" means success
}

func parseCases() []parseCase {
	rules := reviewRules{cluster: "east", audiences: []string{"meshca", "istio-ca"}}
	unbound := rules
	unbound.allowUnbound = true
	return []parseCase{
		{name: "bound token", rules: rules, want: Identity{
			Cluster: "east", Namespace: "shop", ServiceAccount: "web",
			PodName: "web-0", PodUID: "0b9c3a52-0000-4000-8000-000000000002",
		}},
		{name: "not authenticated", rules: rules, wantErr: "token review: token has been invalidated",
			mutate: func(s *authnv1.TokenReviewStatus) {
				*s = authnv1.TokenReviewStatus{Error: "token has been invalidated"}
			}},
		{name: "not authenticated without reason", rules: rules, wantErr: "not authenticated",
			mutate: func(s *authnv1.TokenReviewStatus) { s.Authenticated = false }},
		{name: "authenticated with an error", rules: rules, wantErr: "authenticated with error",
			mutate: func(s *authnv1.TokenReviewStatus) { s.Error = "partial" }},
		{name: "no status audiences", rules: rules, wantErr: "do not include an accepted audience",
			mutate: func(s *authnv1.TokenReviewStatus) { s.Audiences = nil }},
		{name: "foreign status audience", rules: rules, wantErr: `audiences "vault"`,
			mutate: func(s *authnv1.TokenReviewStatus) { s.Audiences = []string{"vault"} }},
		{name: "one of several audiences accepted", rules: rules, want: Identity{
			Cluster: "east", Namespace: "shop", ServiceAccount: "web",
			PodName: "web-0", PodUID: "0b9c3a52-0000-4000-8000-000000000002",
		}, mutate: func(s *authnv1.TokenReviewStatus) { s.Audiences = []string{"vault", "meshca"} }},
		{name: "a user, not a service account", rules: rules, wantErr: "is not a service account",
			mutate: func(s *authnv1.TokenReviewStatus) { s.User.Username = "alice" }},
		{name: "node identity", rules: rules, wantErr: "is not a service account",
			mutate: func(s *authnv1.TokenReviewStatus) { s.User.Username = "system:node:worker-1" }},
		{name: "uppercase namespace", rules: rules, wantErr: "invalid namespace",
			mutate: func(s *authnv1.TokenReviewStatus) { s.User.Username = "system:serviceaccount:Shop:web" }},
		{name: "empty namespace", rules: rules, wantErr: "invalid namespace",
			mutate: func(s *authnv1.TokenReviewStatus) { s.User.Username = "system:serviceaccount::web" }},
		{name: "extra colon in service account", rules: rules, wantErr: "invalid service account name",
			mutate: func(s *authnv1.TokenReviewStatus) { s.User.Username = "system:serviceaccount:shop:web:x" }},
		{name: "service account too long", rules: rules, wantErr: "invalid service account name",
			mutate: func(s *authnv1.TokenReviewStatus) {
				s.User.Username = "system:serviceaccount:shop:" + strings.Repeat("a", 64)
			}},
		{name: "no service accounts group", rules: rules, wantErr: "not in group system:serviceaccounts",
			mutate: func(s *authnv1.TokenReviewStatus) { s.User.Groups = []string{"system:authenticated"} }},
		{name: "unbound token while binding is required", rules: rules, wantErr: "is not bound to a pod",
			mutate: func(s *authnv1.TokenReviewStatus) { s.User.Extra = nil }},
		{name: "unbound token allowed", rules: unbound, want: Identity{
			Cluster: "east", Namespace: "shop", ServiceAccount: "web",
		}, mutate: func(s *authnv1.TokenReviewStatus) { s.User.Extra = nil }},
		{name: "pod name without uid", rules: unbound, wantErr: "invalid pod binding",
			mutate: func(s *authnv1.TokenReviewStatus) { delete(s.User.Extra, extraPodUID) }},
		{name: "two pod names", rules: rules, wantErr: "invalid pod binding",
			mutate: func(s *authnv1.TokenReviewStatus) { s.User.Extra[extraPodName] = []string{"a", "b"} }},
		{name: "empty pod uid", rules: rules, wantErr: "invalid pod binding",
			mutate: func(s *authnv1.TokenReviewStatus) { s.User.Extra[extraPodUID] = []string{""} }},
		{name: "invalid pod name", rules: rules, wantErr: "invalid pod binding",
			mutate: func(s *authnv1.TokenReviewStatus) { s.User.Extra[extraPodName] = []string{"Web_0"} }},
	}
}

func TestParseTokenReview(t *testing.T) {
	for _, tc := range parseCases() {
		t.Run(tc.name, func(t *testing.T) {
			st := boundStatus()
			if tc.mutate != nil {
				tc.mutate(&st)
			}
			got, err := parseTokenReview(&st, &tc.rules)
			if tc.wantErr != "" {
				if !errors.Is(err, ErrUnauthenticated) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want ErrUnauthenticated containing %q", err, tc.wantErr)
				}
				if got != (Identity{}) {
					t.Errorf("identity %+v returned with an error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("identity = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestCheckPod(t *testing.T) {
	id := Identity{Namespace: "shop", ServiceAccount: "web", PodName: "web-0", PodUID: "uid-1"}
	live := func() *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-0", UID: "uid-1"},
			Spec:       corev1.PodSpec{ServiceAccountName: "web"},
		}
	}
	now := metav1.NewTime(testNow)
	tests := []struct {
		name    string
		mutate  func(*corev1.Pod)
		wantErr string
	}{
		{name: "same pod"},
		{name: "recreated under the same name", wantErr: "has uid uid-2, token is bound to uid uid-1",
			mutate: func(p *corev1.Pod) { p.UID = "uid-2" }},
		{name: "terminating", wantErr: "is terminating",
			mutate: func(p *corev1.Pod) { p.DeletionTimestamp = &now }},
		{name: "other service account", wantErr: `runs as service account "db"`,
			mutate: func(p *corev1.Pod) { p.Spec.ServiceAccountName = "db" }},
		{name: "other namespace", wantErr: "fetched pod other/web-0",
			mutate: func(p *corev1.Pod) { p.Namespace = "other" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := live()
			if tc.mutate != nil {
				tc.mutate(p)
			}
			err := checkPod(p, &id)
			checkUnauthenticated(t, err, tc.wantErr)
		})
	}
}

func TestUnverifiedExpiry(t *testing.T) {
	jwt := func(payload string) string {
		return "eyJhbGciOiJSUzI1NiJ9." + base64.RawURLEncoding.EncodeToString([]byte(payload)) + ".c2ln"
	}
	tests := []struct {
		name  string
		token string
		want  time.Time
	}{
		{"integer exp", jwt(`{"exp":1772366400,"sub":"x"}`), time.Unix(1772366400, 0).UTC()},
		{"fractional exp", jwt(`{"exp":1772366400.9}`), time.Unix(1772366400, 0).UTC()},
		{"no exp", jwt(`{"sub":"x"}`), time.Time{}},
		{"string exp", jwt(`{"exp":"soon"}`), time.Time{}},
		{"negative exp", jwt(`{"exp":-1}`), time.Time{}},
		{"absurd exp", jwt(`{"exp":1e300}`), time.Time{}},
		{"payload not json", jwt(`not json`), time.Time{}},
		{"payload not base64url", "a.!!!.c", time.Time{}},
		{"two parts", "a.b", time.Time{}},
		{"four parts", "a.b.c.d", time.Time{}},
		{"opaque token", "abcdef", time.Time{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := unverifiedExpiry(tc.token); !got.Equal(tc.want) {
				t.Errorf("unverifiedExpiry = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestTokenReviewConfigValidate(t *testing.T) {
	if _, err := NewTokenReview(TokenReviewConfig{}); err == nil || !strings.Contains(err.Error(), "client is required") {
		t.Errorf("NewTokenReview without client: err = %v", err)
	}
}
