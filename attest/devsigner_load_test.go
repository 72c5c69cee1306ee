package attest

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestLoadDevSignerCreatesNothing(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dev")
	if _, err := LoadDevSigner(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("LoadDevSigner without a key: %v, want fs.ErrNotExist", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("LoadDevSigner created %s (stat: %v)", dir, err)
	}

	created, err := LoadOrCreateDevSigner(dir)
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := LoadDevSigner(dir)
	if err != nil {
		t.Fatalf("LoadDevSigner after LoadOrCreateDevSigner: %v", err)
	}
	if loaded.keyID() != created.keyID() {
		t.Fatalf("LoadDevSigner key %s, want the stored key %s", loaded.keyID(), created.keyID())
	}
}
