package vault

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/hashicorp/vault/api"
)

func TestConfigValidate(t *testing.T) {
	ok := Config{Address: "https://vault:8200", KeyName: "root", Auth: AuthConfig{Token: "t"}}
	tests := []struct {
		name   string
		modify func(*Config)
		want   string // "" means valid
	}{
		{"minimal", func(*Config) {}, ""},
		{"unix socket", func(c *Config) { c.Address = "unix:///run/vault.sock" }, ""},
		{"no address", func(c *Config) { c.Address = "" }, "address is required"},
		{"address without scheme", func(c *Config) { c.Address = "vault:8200" }, "must be an http(s)://"},
		{"no key", func(c *Config) { c.KeyName = "" }, "key name is required"},
		{"key name with a slash", func(c *Config) { c.KeyName = "a/b" }, "key name"},
		{"key name with a dot", func(c *Config) { c.KeyName = "meshca.root@prod" }, ""},
		{"rsa-4096", func(c *Config) { c.KeyType = KeyTypeRSA4096 }, ""},
		{"ed25519 unsupported", func(c *Config) { c.KeyType = "ed25519" }, "unsupported key type"},
		{"negative timeout", func(c *Config) { c.Timeout = -1 }, "negative timeout"},
		{"negative retries", func(c *Config) { c.MaxRetries = -1 }, "negative max retries"},
		{"token and token file", func(c *Config) { c.Auth.TokenFile = "/f" }, "exactly one"},
		{"no token", func(c *Config) { c.Auth.Token = "" }, "exactly one"},
		{"approle", func(c *Config) {
			c.Auth = AuthConfig{Method: AuthAppRole, AppRole: AppRoleConfig{RoleID: "r", SecretIDFile: "/s"}}
		}, ""},
		{"approle without secret id", func(c *Config) {
			c.Auth = AuthConfig{Method: AuthAppRole, AppRole: AppRoleConfig{RoleID: "r"}}
		}, "secret ID file"},
		{"kubernetes", func(c *Config) {
			c.Auth = AuthConfig{Method: AuthKubernetes, Kubernetes: KubernetesConfig{Role: "meshca"}}
		}, ""},
		{"kubernetes without role", func(c *Config) { c.Auth = AuthConfig{Method: AuthKubernetes} }, "needs a role"},
		{"unknown method", func(c *Config) { c.Auth.Method = "ldap" }, "unknown method"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.modify(&c)
			err := c.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate: %v, want %q", err, tt.want)
			}
		})
	}
}

func TestWithDefaults(t *testing.T) {
	c := Config{}.withDefaults()
	if c.Mount != "transit" || c.KeyType != KeyTypeECDSAP256 || c.Timeout != DefaultTimeout ||
		c.Auth.Method != AuthToken || c.Auth.AppRole.Mount != "approle" ||
		c.Auth.Kubernetes.Mount != "kubernetes" || c.Auth.Kubernetes.JWTFile != defaultKubernetesJWTFile || c.Logger == nil {
		t.Fatalf("defaults not applied: %+v", c)
	}
}

func TestSignRequest(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rk := &rsa.PublicKey{} // only its type matters
	d256 := make([]byte, 32)
	tests := []struct {
		name    string
		pub     crypto.PublicKey
		digest  []byte
		opts    crypto.SignerOpts
		want    map[string]any
		wantErr string
	}{
		{"ecdsa sha256", &ec.PublicKey, d256, crypto.SHA256,
			map[string]any{"hash_algorithm": "sha2-256", "marshaling_algorithm": "asn1", "prehashed": true, "key_version": 3}, ""},
		{"ecdsa sha384", &ec.PublicKey, make([]byte, 48), crypto.SHA384, map[string]any{"hash_algorithm": "sha2-384"}, ""},
		{"rsa pkcs1v15", rk, d256, crypto.SHA256, map[string]any{"signature_algorithm": "pkcs1v15"}, ""},
		{"rsa pss salt hash", rk, d256, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256},
			map[string]any{"signature_algorithm": "pss", "salt_length": "hash"}, ""},
		{"rsa pss salt auto", rk, d256, &rsa.PSSOptions{Hash: crypto.SHA256},
			map[string]any{"signature_algorithm": "pss", "salt_length": "auto"}, ""},
		{"rsa pss salt 20", rk, d256, &rsa.PSSOptions{SaltLength: 20, Hash: crypto.SHA256},
			map[string]any{"salt_length": "20"}, ""},
		{"wrong digest length", &ec.PublicKey, make([]byte, 20), crypto.SHA256, nil, "digest is 20 bytes"},
		{"no hash (ed25519 style)", &ec.PublicKey, d256, crypto.Hash(0), nil, "unsupported hash"},
		{"md5", rk, make([]byte, 16), crypto.MD5, nil, "unsupported hash"},
		{"pss for ecdsa", &ec.PublicKey, d256, &rsa.PSSOptions{Hash: crypto.SHA256}, nil, "PSS options"},
		{"nil opts", &ec.PublicKey, d256, nil, nil, "options are required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body, err := signRequest(tt.pub, 3, tt.digest, tt.opts)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if body["input"] != base64.StdEncoding.EncodeToString(tt.digest) {
				t.Errorf("input %v", body["input"])
			}
			for k, v := range tt.want {
				if body[k] != v {
					t.Errorf("%s = %v, want %v", k, body[k], v)
				}
			}
		})
	}
}

func TestParseSignature(t *testing.T) {
	sig := base64.StdEncoding.EncodeToString([]byte{1, 2, 3})
	tests := []struct {
		name, text string
		wantErr    string
	}{
		{"ok", "vault:v2:" + sig, ""},
		{"other version", "vault:v1:" + sig, "key version 1, want 2"},
		{"no prefix", "v2:" + sig, "malformed signature"},
		{"not vault", "bao:v2:" + sig, "malformed signature"},
		{"bad version", "vault:vx:" + sig, "malformed signature version"},
		{"bad base64", "vault:v2:***", "malformed signature encoding"},
		{"empty", "vault:v2:", "empty signature"},
		{"missing", "", "malformed signature"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseSignature(tt.text, 2)
			if tt.wantErr == "" {
				if err != nil || string(got) != "\x01\x02\x03" {
					t.Fatalf("got %v, %v", got, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func pemPublic(t *testing.T, pub crypto.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

func TestCheckKey(t *testing.T) {
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	good := map[string]any{
		"type": "ecdsa-p256", "exportable": false, "allow_plaintext_backup": false,
		"supports_signing": true, "latest_version": 2,
		"keys": map[string]any{"1": map[string]any{"public_key": "old"}, "2": map[string]any{"public_key": pemPublic(t, &p256.PublicKey)}},
	}
	with := func(k string, v any) map[string]any {
		m := map[string]any{}
		for kk, vv := range good {
			m[kk] = vv
		}
		m[k] = v
		return m
	}
	tests := []struct {
		name    string
		data    map[string]any
		want    string
		wantErr string
	}{
		{"ok", good, "ecdsa-p256", ""},
		{"exportable", with("exportable", true), "ecdsa-p256", "exportable"},
		{"plaintext backup", with("allow_plaintext_backup", true), "ecdsa-p256", "plaintext backup"},
		{"other type", good, "ecdsa-p384", `type "ecdsa-p256", configured "ecdsa-p384"`},
		{"no signing", with("supports_signing", false), "ecdsa-p256", "does not support signing"},
		{"no version", with("latest_version", 0), "ecdsa-p256", "latest version 0"},
		{"public key of another curve", with("keys", map[string]any{"2": map[string]any{"public_key": pemPublic(t, &p384.PublicKey)}}),
			"ecdsa-p256", "does not match"},
		{"latest version lacks a key", with("keys", map[string]any{}), "ecdsa-p256", "has no public key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info, err := parseKeyInfo(tt.data)
			if err == nil {
				err = checkKey(info, tt.want)
			}
			if err == nil {
				_, err = parsePublicKey(info.PublicKeyPEM, tt.want)
			}
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestClassify(t *testing.T) {
	s := &Client{}
	denied := &api.ResponseError{HTTPMethod: "PUT", URL: "http://v/x", StatusCode: http.StatusForbidden, Errors: []string{"permission denied"}}
	err := s.classify(context.Background(), fmt.Errorf("context: %w", denied))
	if !errors.Is(err, ErrPermissionDenied) || strings.Contains(err.Error(), "\n") ||
		!strings.Contains(err.Error(), "HTTP 403: permission denied") {
		t.Fatalf("403: %q", err)
	}
	bad := &api.ResponseError{StatusCode: http.StatusBadRequest, Errors: []string{"invalid"}}
	if err := s.classify(context.Background(), bad); errors.Is(err, ErrPermissionDenied) || errors.Is(err, ErrUnreachable) ||
		err.Error() != "HTTP 400: invalid" {
		t.Fatalf("400: %q", err)
	}
	if err := s.classify(context.Background(), errors.New("dial tcp: connection refused")); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("connection error: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.classify(ctx, context.Canceled); errors.Is(err, ErrUnreachable) {
		t.Fatalf("cancelled by the caller: %v", err)
	}
}
