package vault

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/meshca/meshca/test/vaulttest"
)

// The Vault servers are started by the tests themselves through
// test/vaulttest, from the binary that `make testbed-vault` builds (see
// test/testbed/vault.mk).

func TestMain(m *testing.M) {
	code := m.Run()
	vaulttest.StopShared()
	os.Exit(code)
}

// tokenConfig returns a Config for v with the given token and key name.
func tokenConfig(v *vaulttest.Server, token, key string) Config {
	return Config{Address: v.Addr, KeyName: key, Auth: AuthConfig{Token: token}}
}

// newSigner creates a Signer and closes it at the end of the test.
func newSigner(tb testing.TB, cfg Config) *Signer {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := New(ctx, cfg)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}
