package multicluster

import (
	"context"
	"crypto/x509"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	workloadpb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// crlWatch follows the CRLs an agent delivers on its Workload API
// (X509SVIDResponse.crl; go-spiffe's X509Source does not expose them) and
// checks peer chains against them, as a relying party that honours the
// agent's CRLs would.
type crlWatch struct {
	mu   sync.Mutex
	crls []*x509.RevocationList
	seen chan struct{} // closed and replaced on every update
}

func watchCRLs(t *testing.T, socket string) *crlWatch {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); conn.Close() })
	ctx = metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true")
	stream, err := workloadpb.NewSpiffeWorkloadAPIClient(conn).FetchX509SVID(ctx, &workloadpb.X509SVIDRequest{})
	if err != nil {
		t.Fatal(err)
	}
	w := &crlWatch{seen: make(chan struct{})}
	go func() {
		for {
			resp, err := stream.Recv()
			if err != nil {
				return
			}
			var crls []*x509.RevocationList
			for _, der := range resp.GetCrl() {
				if rl, err := x509.ParseRevocationList(der); err == nil {
					crls = append(crls, rl)
				}
			}
			w.mu.Lock()
			w.crls = crls
			close(w.seen)
			w.seen = make(chan struct{})
			w.mu.Unlock()
		}
	}()
	return w
}

// revoked reports whether a CRL the agent delivered, signed by issuer,
// lists c.
func (w *crlWatch) revoked(c, issuer *x509.Certificate) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, rl := range w.crls {
		if rl.CheckSignatureFrom(issuer) != nil {
			continue
		}
		for _, e := range rl.RevokedCertificateEntries {
			if e.SerialNumber.Cmp(c.SerialNumber) == 0 {
				return true
			}
		}
	}
	return false
}

// lists reports whether any delivered CRL lists serial.
func (w *crlWatch) lists(serial string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, rl := range w.crls {
		for _, e := range rl.RevokedCertificateEntries {
			if e.SerialNumber.Text(16) == serial {
				return true
			}
		}
	}
	return false
}

// verifier checks every certificate of the peer's chain, up to and
// including the intermediate under the root (verified against bundles, the
// agent's bundles), against the CRLs: wrap a tls.Config's
// VerifyPeerCertificate with it.
func (w *crlWatch) verifier(bundles x509bundle.Source, next func([][]byte, [][]*x509.Certificate) error) func([][]byte, [][]*x509.Certificate) error {
	return func(raw [][]byte, chains [][]*x509.Certificate) error {
		if next != nil {
			if err := next(raw, chains); err != nil {
				return err
			}
		}
		_, verified, err := x509svid.ParseAndVerify(raw, bundles)
		if err != nil {
			return err
		}
		for _, chain := range verified {
			for i := 0; i+1 < len(chain); i++ {
				if w.revoked(chain[i], chain[i+1]) {
					return fmt.Errorf("certificate %x (%s) is revoked", chain[i].SerialNumber, chain[i].Subject)
				}
			}
		}
		return nil
	}
}

// waitFailing waits until check fails for every call over a second, and
// returns when it first started failing.
func waitFailing(t *testing.T, what string, timeout time.Duration, check func() error) time.Time {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var since time.Time
	for time.Now().Before(deadline) {
		if err := check(); err != nil {
			if since.IsZero() {
				since = time.Now()
			}
			if time.Since(since) > time.Second {
				return since
			}
		} else {
			since = time.Time{}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: still succeeding after %v", what, timeout)
	return time.Time{}
}
