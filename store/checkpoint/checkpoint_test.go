package checkpoint

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/store"
)

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

var testHead = store.ChainHead{Seq: 42, Hash: bytes.Repeat([]byte{0xab}, store.HashSize)}

func TestSignVerifyRoundTrip(t *testing.T) {
	key := newKey(t)
	now := time.Date(2026, 3, 1, 12, 0, 0, 500, time.FixedZone("X", 3600))
	data, err := Sign(key, Checkpoint{Name: "cluster/east", Head: testHead, Time: now})
	if err != nil {
		t.Fatal(err)
	}
	cp, err := verify(data, key.Public())
	if err != nil {
		t.Fatal(err)
	}
	kid, _ := keyID(key.Public())
	if cp.Name != "cluster/east" || cp.Head.Seq != 42 || !bytes.Equal(cp.Head.Hash, testHead.Hash) ||
		!cp.Time.Equal(now.Truncate(time.Second)) || cp.KeyID != kid {
		t.Fatalf("Verify = %+v", cp)
	}
}

// TestVerifyRefusesForgeries edits a signed checkpoint the way someone
// covering up a rewrite would, and signs one with another key.
func TestVerifyRefusesForgeries(t *testing.T) {
	key := newKey(t)
	data, err := Sign(key, Checkpoint{Name: "root", Head: testHead, Time: time.Unix(1e9, 0)})
	if err != nil {
		t.Fatal(err)
	}
	edit := func(f func(m map[string]any)) []byte {
		var m map[string]any
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatal(err)
		}
		f(m)
		out, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	other := newKey(t)
	otherKID, _ := keyID(other.Public())
	forged, err := Sign(other, Checkpoint{Name: "root", Head: testHead, Time: time.Unix(1e9, 0)})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, want string
		data       []byte
	}{
		{"lower seq", "invalid signature", edit(func(m map[string]any) { m["seq"] = 40 })},
		{"other hash", "invalid signature", edit(func(m map[string]any) { m["hash"] = strings.Repeat("cd", 32) })},
		{"other time", "invalid signature", edit(func(m map[string]any) { m["time"] = "2030-01-01T00:00:00Z" })},
		{"other name", "invalid signature", edit(func(m map[string]any) { m["name"] = "cluster/west" })},
		{"key id claims the key", "invalid signature", func() []byte {
			var m map[string]any
			_ = json.Unmarshal(forged, &m)
			m["key_id"], _ = keyID(key.Public())
			out, _ := json.Marshal(m)
			return out
		}()},
		{"signed by another key", "signed by key " + otherKID, forged},
		{"no signature", "no signature", edit(func(m map[string]any) { delete(m, "signature") })},
		{"unknown field", "unknown field", edit(func(m map[string]any) { m["extra"] = 1 })},
		{"short hash", "hash of 2 bytes", edit(func(m map[string]any) { m["hash"] = "abcd" })},
		{"seq 0", "seq 0", edit(func(m map[string]any) { m["seq"] = 0 })},
		{"version 2", "unsupported version 2", edit(func(m map[string]any) { m["version"] = 2 })},
		{"not JSON", "parse", []byte("seq=42")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := verify(tt.data, key.Public())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Verify = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestLoadOrCreateKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit-checkpoint-key.pem")
	k1, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	k2, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if !k1.Public().(*ecdsa.PublicKey).Equal(k2.Public()) {
		t.Fatal("reloading the key file gave another key")
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateKey(path); err == nil || !strings.Contains(err.Error(), "want no access for group and others") {
		t.Fatalf("LoadOrCreateKey of a world-readable key = %v, want a refusal", err)
	}
}

func TestValidateKeepsConfig(t *testing.T) {
	testkit.ValidateKeepsConfig(t, &checkpointerConfig{})
}
