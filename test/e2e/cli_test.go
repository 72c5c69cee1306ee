package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshca/meshca/internal/testkit"
)

// configExitTimeout is how quickly a bad config must be refused: at once, not
// after starting to serve.
const configExitTimeout = 10 * time.Second

// TestConfigFile checks `meshca dev --config`: strict decoding and leafTTL.
func TestConfigFile(t *testing.T) {
	bad := []struct {
		name   string
		config string
		field  string // the unknown field the error must name
	}{
		{
			name:   "misspelled field",
			config: "trustDomain: cluster.local\nleaf_ttl: 30m\n",
			field:  "leaf_ttl",
		},
		{
			name:   "field of another component",
			config: "leafTTL: 30m\nvault:\n  address: http://127.0.0.1:8200\n",
			field:  "vault",
		},
		{
			// Field names are case-sensitive: a second spelling must not
			// silently override the first.
			name:   "wrong case",
			config: "leafTTL: 30m\nleafttl: 20h\n",
			field:  "leafttl",
		},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			work := t.TempDir()
			writeFile(t, filepath.Join(work, "f.yaml"), tt.config)
			r := runWithin(t, configExitTimeout, work, meshcaBin,
				"dev", "--config", "f.yaml", "--listen", testkit.FreeAddr(t))
			if r.code == 0 {
				t.Fatalf("meshca dev accepted a config with unknown field %q: %s", tt.field, r)
			}
			if !strings.Contains(r.stderr, tt.field) {
				t.Errorf("error does not name the unknown field %q: %s", tt.field, r)
			}
			// The config decides where state goes, so nothing may be
			// created before it has been read.
			if fileExists(filepath.Join(work, ".meshca-dev")) {
				t.Errorf("meshca dev created ./.meshca-dev before refusing its config")
			}
		})
	}

	t.Run("leafTTL", func(t *testing.T) {
		requireOpenSSL(t)
		work := t.TempDir()
		writeFile(t, filepath.Join(work, "meshca.yaml"),
			"trustDomain: cluster.local\nhosts: [\"127.0.0.1\"]\nleafTTL: 30m\n")
		srv := startDev(t, devOptions{Dir: work, Args: []string{"--config", "meshca.yaml"}})
		_, tokenFile := mintToken(t, work, "token")
		out := filepath.Join(work, "certs")
		if r := fetchCert(t, srv, tokenFile, out); r.code != 0 {
			t.Fatalf("cert fetch: %s\n%s", r, srv.Output())
		}
		checkFetched(t, out, certWant{ID: workloadID, TTL: 30 * time.Minute, KeyType: "ec-p256", Bundle: srv.BundlePath()})
	})
}

// TestVersion checks that `meshca version` works without any setup.
func TestVersion(t *testing.T) {
	r := runMeshca(t, t.TempDir(), "version")
	mustSucceed(t, "meshca version", r)
	if !strings.HasPrefix(r.stdout, "meshca ") || strings.Count(r.stdout, "\n") != 1 {
		t.Errorf("meshca version printed %q, want one line starting with \"meshca \"", r.stdout)
	}
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
