package harness

import (
	"strings"
	"testing"
)

func TestFindSecrets(t *testing.T) {
	const jwt = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ3ZWIifQ.c2ln"
	for _, tc := range []struct {
		name, out string
		allowed   []string
		want      []string // names found, in the order secrets lists them
	}{
		{"a JWT", `{"msg":"request","token":"` + jwt + `"}`, nil, []string{"eyJ"}},
		{"a JWT without its signature", "token " + jwt[:strings.LastIndexByte(jwt, '.')+1], nil, []string{"eyJ"}},
		{"a key id holding eyJ", `{"msg":"published","kid":"Qx7eyJb-9fK_2mZ"}`, nil, nil},
		{"a PEM key", "-----BEGIN EC PRIVATE KEY-----", nil, []string{"PRIVATE KEY"}},
		{"a join token", "join with mjt1.abc", nil, []string{"mjt1."}},
		{"an allowed JWT", "redeemed " + jwt, []string{"eyJ"}, nil},
		{"nothing", `{"msg":"serving"}`, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			found := findSecrets("first line\n"+tc.out+"\nlast line", tc.allowed)
			if len(found) != len(tc.want) {
				t.Fatalf("found %q, want %q", found, tc.want)
			}
			for i, f := range found {
				if !strings.HasPrefix(f, `"`+tc.want[i]+`" in: `) || strings.Contains(f, "first line") || strings.Contains(f, jwt) {
					t.Errorf("report %q: want the name, the line before the secret, not the secret", f)
				}
			}
		})
	}
}
