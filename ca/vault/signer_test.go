package vault

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/test/vaulttest"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func digestOf(h crypto.Hash, msg string) []byte {
	w := h.New()
	w.Write([]byte(msg))
	return w.Sum(nil)
}

func TestSignVerifies(t *testing.T) {
	v := vaulttest.Shared(t)
	pssHash := &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}
	pssAuto := &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto, Hash: crypto.SHA512}
	tests := []struct {
		name    string
		keyType string
		opts    crypto.SignerOpts
	}{
		{"ecdsa-p256 sha256", KeyTypeECDSAP256, crypto.SHA256},
		{"ecdsa-p384 sha384", KeyTypeECDSAP384, crypto.SHA384},
		{"ecdsa-p256 sha512", KeyTypeECDSAP256, crypto.SHA512},
		{"rsa-2048 pkcs1v15 sha256", KeyTypeRSA2048, crypto.SHA256},
		{"rsa-2048 pss salt=hash sha256", KeyTypeRSA2048, pssHash},
		{"rsa-2048 pss salt=auto sha512", KeyTypeRSA2048, pssAuto},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tokenConfig(v, "root", vaulttest.KeyName(t))
			cfg.KeyType = tt.keyType
			s := newSigner(t, cfg)
			h := tt.opts.HashFunc()
			digest := digestOf(h, "hello "+tt.name)
			sig, err := s.Sign(rand.Reader, digest, tt.opts)
			if err != nil {
				t.Fatalf("Sign: %v", err)
			}
			other := digestOf(h, "something else")
			switch pub := s.Public().(type) {
			case *ecdsa.PublicKey:
				if !ecdsa.VerifyASN1(pub, digest, sig) {
					t.Fatal("ecdsa.VerifyASN1 rejects Vault's signature")
				}
				if ecdsa.VerifyASN1(pub, other, sig) {
					t.Fatal("signature verifies for another digest")
				}
			case *rsa.PublicKey:
				verify := func(d []byte) error { return rsa.VerifyPKCS1v15(pub, h, d, sig) }
				if pss, ok := tt.opts.(*rsa.PSSOptions); ok {
					verify = func(d []byte) error { return rsa.VerifyPSS(pub, h, d, sig, pss) }
				}
				if err := verify(digest); err != nil {
					t.Fatalf("rsa verify: %v", err)
				}
				if verify(other) == nil {
					t.Fatal("signature verifies for another digest")
				}
			default:
				t.Fatalf("public key %T", pub)
			}
		})
	}
}

// The same key name gives the same key: a restarted meshca keeps its root.
func TestNewReusesKey(t *testing.T) {
	v := vaulttest.Shared(t)
	cfg := tokenConfig(v, "root", vaulttest.KeyName(t))
	a, b := newSigner(t, cfg), newSigner(t, cfg)
	if !a.Public().(*ecdsa.PublicKey).Equal(b.Public()) {
		t.Fatal("second Signer has another public key")
	}
	if a.keyVersion() != 1 {
		t.Fatalf("key version %d, want 1", a.keyVersion())
	}
}

func TestRootSignedByVault(t *testing.T) {
	v := vaulttest.Shared(t)
	for _, keyType := range []string{KeyTypeECDSAP256, KeyTypeECDSAP384, KeyTypeRSA2048} {
		t.Run(keyType, func(t *testing.T) {
			cfg := tokenConfig(v, "root", vaulttest.KeyName(t))
			cfg.KeyType = keyType
			s := newSigner(t, cfg)
			root, err := ca.NewRoot(ca.RootConfig{Signer: s, CommonName: "vault root"})
			if err != nil {
				t.Fatalf("NewRoot: %v", err)
			}
			if err := root.Certificate.CheckSignatureFrom(root.Certificate); err != nil {
				t.Fatalf("root is not self-signed by the Vault key: %v", err)
			}
			roots := x509.NewCertPool()
			roots.AddCert(root.Certificate)

			td := spiffeid.RequireTrustDomainFromString("vault.test")
			ikey := testkit.Key(t, "vault-intermediate")
			icert, err := root.SignIntermediate(ca.IntermediateRequest{PublicKey: ikey.Public(), TrustDomain: td, Cluster: "east"})
			if err != nil {
				t.Fatalf("SignIntermediate: %v", err)
			}
			if err := icert.CheckSignatureFrom(root.Certificate); err != nil {
				t.Fatalf("intermediate: %v", err)
			}
			inter, err := ca.NewAuthority(icert, ikey)
			if err != nil {
				t.Fatal(err)
			}
			id := &url.URL{Scheme: "spiffe", Host: "vault.test", Path: "/ns/default/sa/web"}
			leaf, err := inter.SignLeaf(ca.LeafRequest{PublicKey: testkit.Key(t, "vault-leaf").Public(), URIs: []*url.URL{id}, TTL: time.Hour})
			if err != nil {
				t.Fatalf("SignLeaf: %v", err)
			}
			inters := x509.NewCertPool()
			inters.AddCert(icert)
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters}); err != nil {
				t.Fatalf("leaf does not chain to the Vault root: %v", err)
			}

			direct, err := root.SignLeaf(ca.LeafRequest{PublicKey: testkit.Key(t, "vault-leaf").Public(), URIs: []*url.URL{id}, TTL: time.Hour})
			if err != nil {
				t.Fatalf("root SignLeaf: %v", err)
			}
			if _, err := direct.Verify(x509.VerifyOptions{Roots: roots}); err != nil {
				t.Fatalf("leaf signed by the Vault root does not verify: %v", err)
			}
		})
	}
}

func TestKeyCreatedNonExportable(t *testing.T) {
	v := vaulttest.Shared(t)
	name := vaulttest.KeyName(t)
	newSigner(t, tokenConfig(v, "root", name))
	ctx := context.Background()
	secret, err := v.Admin.Logical().ReadWithContext(ctx, "transit/keys/"+name)
	if err != nil || secret == nil {
		t.Fatalf("read key: %v", err)
	}
	if secret.Data["exportable"] != false || secret.Data["allow_plaintext_backup"] != false {
		t.Fatalf("key config exportable=%v allow_plaintext_backup=%v, want false, false",
			secret.Data["exportable"], secret.Data["allow_plaintext_backup"])
	}
	if secret.Data["type"] != KeyTypeECDSAP256 {
		t.Fatalf("key type %v", secret.Data["type"])
	}
	// Vault itself refuses to hand the key out, even to root.
	if _, err := v.Admin.Logical().ReadWithContext(ctx, "transit/export/signing-key/"+name); err == nil {
		t.Fatal("export of the signing key succeeded")
	}
}

func TestRefusesUnsafeOrWrongKey(t *testing.T) {
	v := vaulttest.Shared(t)
	tests := []struct {
		name    string
		create  map[string]any
		want    string
		keyType string
	}{
		{"exportable", map[string]any{"type": "ecdsa-p256", "exportable": true}, "exportable", ""},
		{"plaintext backup", map[string]any{"type": "ecdsa-p256", "allow_plaintext_backup": true}, "plaintext backup", ""},
		{"other type", map[string]any{"type": "ecdsa-p384"}, `type "ecdsa-p384"`, KeyTypeECDSAP256},
		{"not a signing key", map[string]any{"type": "aes256-gcm96"}, `type "aes256-gcm96"`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := vaulttest.KeyName(t)
			ctx := context.Background()
			if _, err := v.Admin.Logical().WriteWithContext(ctx, "transit/keys/"+name, tt.create); err != nil {
				t.Fatalf("create key: %v", err)
			}
			cfg := tokenConfig(v, "root", name)
			cfg.KeyType = tt.keyType
			s, err := New(ctx, cfg)
			if err == nil {
				s.Close()
				t.Fatal("New accepted the key")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not name %q", err, tt.want)
			}
		})
	}
}
