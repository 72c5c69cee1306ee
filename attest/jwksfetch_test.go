package attest

import (
	"strings"
	"testing"
)

func TestParseKeySet(t *testing.T) {
	// An EC P-256 public key as kube-apiserver publishes it.
	const ecKey = `{"use":"sig","kty":"EC","kid":"k1","crv":"P-256","alg":"ES256",` +
		`"x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}`
	tests := []struct {
		name    string
		raw     string
		wantErr string
		wantLen int
	}{
		{name: "one key", raw: `{"keys":[` + ecKey + `]}`, wantLen: 1},
		{name: "not json", raw: `<html>`, wantErr: "decode"},
		{name: "no keys", raw: `{"keys":[]}`, wantErr: "no public signing key among 0 keys"},
		{name: "encryption key only", raw: `{"keys":[` + strings.Replace(ecKey, `"use":"sig"`, `"use":"enc"`, 1) + `]}`,
			wantErr: "no public signing key among 1 keys"},
		{name: "symmetric key only", raw: `{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"s"}]}`,
			wantErr: "no public signing key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			set, err := parseKeySet([]byte(tc.raw))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(set.Keys) != tc.wantLen || len(set.Key("k1")) != 1 {
				t.Errorf("set %+v", set)
			}
		})
	}
}

func TestRemoteKeysConfigValidate(t *testing.T) {
	if _, err := NewRemoteKeys(RemoteKeysConfig{}); err == nil || !strings.Contains(err.Error(), "client is required") {
		t.Errorf("NewRemoteKeys without client: %v", err)
	}
}
