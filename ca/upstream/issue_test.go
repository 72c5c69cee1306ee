package upstream

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/smallstep/certificates/cas/apiv1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshca/meshca/internal/grpcx"
	"github.com/meshca/meshca/internal/testkit"
)

// httpError is an HTTP error as step-ca's client returns it.
type httpError int

func (e httpError) Error() string   { return fmt.Sprintf("http status %d", int(e)) }
func (e httpError) StatusCode() int { return int(e) }

// fakeService signs templates as an upstream CA would: under root, or
// under inter when set. It is the one seam Authority has to smallstep's
// adapters; the real step-ca is exercised in stepcas_test.go.
type fakeService struct {
	rootKey, interKey crypto.Signer
	root, inter       *x509.Certificate
	// mutate changes the certificate before it is signed (nil: as asked).
	mutate func(*x509.Certificate)
	// otherRoot, when set, is returned as the upstream root instead.
	otherRoot *x509.Certificate
	err       error
	block     chan struct{}
}

var _ Service = (*fakeService)(nil)

func newFake(t *testing.T, interPathLen int) *fakeService {
	t.Helper()
	f := &fakeService{rootKey: testkit.Key(t, "upstream-root"), interKey: testkit.Key(t, "upstream-inter")}
	now := time.Now()
	f.root = sign(t, &x509.Certificate{Subject: pkix.Name{CommonName: "up root"}, NotBefore: now.Add(-time.Hour),
		NotAfter: now.Add(10 * 365 * 24 * time.Hour), IsCA: true, BasicConstraintsValid: true, MaxPathLen: -1,
		KeyUsage: x509.KeyUsageCertSign}, nil, f.rootKey, f.rootKey.Public())
	if interPathLen >= 0 {
		f.inter = sign(t, &x509.Certificate{Subject: pkix.Name{CommonName: "up inter"}, NotBefore: now.Add(-time.Hour),
			NotAfter: now.Add(5 * 365 * 24 * time.Hour), IsCA: true, BasicConstraintsValid: true, MaxPathLen: interPathLen,
			MaxPathLenZero: interPathLen == 0, KeyUsage: x509.KeyUsageCertSign}, f.root, f.rootKey, f.interKey.Public())
	}
	return f
}

func sign(t *testing.T, tmpl, parent *x509.Certificate, key crypto.Signer, pub crypto.PublicKey) *x509.Certificate {
	t.Helper()
	tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
	if parent == nil {
		parent = tmpl
	}
	return testkit.Certificate(t, tmpl, parent, pub, key)
}

func (f *fakeService) CreateCertificate(req *apiv1.CreateCertificateRequest) (*apiv1.CreateCertificateResponse, error) {
	if f.block != nil {
		<-f.block
	}
	if f.err != nil {
		return nil, f.err
	}
	if err := req.CSR.CheckSignature(); err != nil {
		return nil, err
	}
	tmpl := *req.Template
	tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Minute), time.Now().Add(req.Lifetime)
	pub := req.CSR.PublicKey
	if f.mutate != nil {
		f.mutate(&tmpl)
		pub = tmpl.PublicKey
	}
	parent, key, chain := f.root, f.rootKey, []*x509.Certificate{f.root}
	if f.inter != nil {
		parent, key, chain = f.inter, f.interKey, []*x509.Certificate{f.inter, f.root}
	}
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, parent, pub, key)
	if err != nil {
		return nil, err
	}
	c, err := x509.ParseCertificate(der)
	return &apiv1.CreateCertificateResponse{Certificate: c, CertificateChain: chain}, err
}

func (f *fakeService) GetCertificateAuthority(*apiv1.GetCertificateAuthorityRequest) (*apiv1.GetCertificateAuthorityResponse, error) {
	if f.otherRoot != nil {
		return &apiv1.GetCertificateAuthorityResponse{RootCertificate: f.otherRoot}, nil
	}
	return &apiv1.GetCertificateAuthorityResponse{RootCertificate: f.root}, nil
}

func TestIssueChecksTheAnswer(t *testing.T) {
	other := testkit.Key(t, "other")
	cases := []struct {
		name      string
		interPath int // -1: signed by the root directly
		ttl       time.Duration
		mutate    func(*x509.Certificate)
		otherRoot bool
		err       string // empty: accepted
	}{
		{name: "under the root", interPath: -1},
		{name: "under an intermediate with room", interPath: 2},
		{name: "intermediate leaves no room for the cluster intermediates", interPath: 1, err: "allows path length 1, but 2 CAs"},
		{name: "intermediate with path length 0", interPath: 0, err: "path length"},
		{name: "not a CA", interPath: -1, mutate: func(c *x509.Certificate) { c.IsCA, c.MaxPathLen = false, 0 }, err: "not a CA certificate"},
		{name: "path length 0", interPath: -1, mutate: func(c *x509.Certificate) { c.MaxPathLen, c.MaxPathLenZero = 0, true }, err: "path length 0"},
		{name: "no certSign", interPath: -1, mutate: func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageDigitalSignature }, err: "certSign"},
		{name: "another key", interPath: -1, mutate: func(c *x509.Certificate) { c.PublicKey = other.Public() }, err: "not for meshca's key"},
		{name: "too short", interPath: -1, ttl: MinTTL - time.Hour, err: "less than 24h0m0s"},
		{name: "another root", interPath: -1, otherRoot: true, err: "does not chain to the upstream root"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, tc.interPath)
			f.mutate = tc.mutate
			if tc.otherRoot {
				f.otherRoot = sign(t, &x509.Certificate{Subject: pkix.Name{CommonName: "other"}, NotBefore: time.Now().Add(-time.Hour),
					NotAfter: time.Now().Add(time.Hour * 24 * 365), IsCA: true, BasicConstraintsValid: true}, nil, other, other.Public())
			}
			// A ttl below MinTTL stands for an upstream that shortened
			// the lifetime: Validate would refuse to ask for it.
			a := newAuthority(f, "fake", tc.ttl)
			key := testkit.Key(t, "meshca-ca")
			got, err := a.Issue(context.Background(), Request{Signer: key, CommonName: "mesh CA"})
			if tc.err != "" {
				if !errors.Is(err, ErrBadCertificate) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Issue() error = %v, want ErrBadCertificate containing %q", err, tc.err)
				}
				if got != nil {
					t.Fatal("Issue returned a certificate with its error")
				}
				return
			}
			if err != nil {
				t.Fatalf("Issue() = %v", err)
			}
			if got.Certificate.Subject.CommonName != "mesh CA" || !got.Root.Equal(f.root) {
				t.Errorf("issued %q under %q", got.Certificate.Subject, got.Root.Subject)
			}
			if want := 0; tc.interPath >= 0 {
				want = 1
				if len(got.Chain) != want || !got.Chain[0].Equal(f.inter) {
					t.Errorf("chain has %d certificates, want the upstream intermediate only", len(got.Chain))
				}
			} else if len(got.Chain) != want {
				t.Errorf("chain has %d certificates, want none (the root is returned apart)", len(got.Chain))
			}
			if d := time.Until(got.Certificate.NotAfter); d < DefaultTTL-time.Hour || d > DefaultTTL {
				t.Errorf("lifetime %v, want the default %v", d, DefaultTTL)
			}
		})
	}
}

func TestIssueUpstreamFailures(t *testing.T) {
	key := testkit.Key(t, "meshca-ca")
	t.Run("error", func(t *testing.T) {
		f := newFake(t, -1)
		f.err = errors.New("connection refused")
		_, err := newAuthority(f, "fake", 0).Issue(context.Background(), Request{Signer: key})
		if !errors.Is(err, grpcx.ErrUnavailable) || !strings.Contains(err.Error(), "connection refused") {
			t.Fatalf("Issue() = %v, want ErrUnavailable with the cause", err)
		}
	})
	t.Run("refused", func(t *testing.T) {
		f := newFake(t, -1)
		f.err = httpError(403)
		_, err := newAuthority(f, "fake", 0).Issue(context.Background(), Request{Signer: key})
		if !errors.Is(err, ErrRefused) || errors.Is(err, grpcx.ErrUnavailable) {
			t.Fatalf("Issue() = %v, want ErrRefused only", err)
		}
	})
	t.Run("server error", func(t *testing.T) {
		f := newFake(t, -1)
		f.err = httpError(503)
		_, err := newAuthority(f, "fake", 0).Issue(context.Background(), Request{Signer: key})
		if !errors.Is(err, grpcx.ErrUnavailable) || errors.Is(err, ErrRefused) {
			t.Fatalf("Issue() = %v, want ErrUnavailable only", err)
		}
	})
	t.Run("cloud status", func(t *testing.T) {
		f := newFake(t, -1)
		f.err = status.Error(codes.PermissionDenied, "pool policy forbids CA certificates")
		_, err := newAuthority(f, "fake", 0).Issue(context.Background(), Request{Signer: key})
		if !errors.Is(err, ErrRefused) {
			t.Fatalf("Issue() = %v, want ErrRefused", err)
		}
	})
	t.Run("context ends", func(t *testing.T) {
		f := newFake(t, -1)
		f.block = make(chan struct{})
		defer close(f.block)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := newAuthority(f, "fake", 0).Issue(ctx, Request{Signer: key})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Issue() = %v, want context.Canceled", err)
		}
	})
	t.Run("no signer", func(t *testing.T) {
		if _, err := newAuthority(newFake(t, -1), "fake", 0).Issue(context.Background(), Request{}); err == nil {
			t.Fatal("Issue without a signer succeeded")
		}
	})
}
