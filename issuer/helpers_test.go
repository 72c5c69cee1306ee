package issuer_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshca/meshca/internal/testkit"
)

// captureLogs returns a debug-level JSON logger and its output, which is
// printed if the test fails.
func captureLogs(t testing.TB) (*slog.Logger, *testkit.LogBuffer) {
	buf := &testkit.LogBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", buf.String())
		}
	})
	return slog.New(slog.NewJSONHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// wantRefused fails unless err is a gRPC status of code whose message
// contains msg; an Unauthenticated message must be exactly msg, so that it
// tells the caller nothing about why.
func wantRefused(t testing.TB, err error, code codes.Code, msg string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != code {
		t.Fatalf("code %v (%q), want %v", st.Code(), st.Message(), code)
	}
	if code == codes.Unauthenticated && st.Message() != msg {
		t.Errorf("Unauthenticated message %q leaks detail; want exactly %q", st.Message(), msg)
	}
	if !strings.Contains(st.Message(), msg) {
		t.Errorf("message %q, want it to contain %q", st.Message(), msg)
	}
}

// assertNoSecrets fails if logs contain key material or any of secrets.
func assertNoSecrets(t testing.TB, logs string, secrets ...string) {
	t.Helper()
	for _, s := range append([]string{"PRIVATE KEY", "BEGIN"}, secrets...) {
		if s != "" && strings.Contains(logs, s) {
			t.Errorf("logs contain %q", s)
		}
	}
}

func newKey(tb testing.TB) *ecdsa.PrivateKey {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return key
}

var errNotYet = errors.New("not yet")
