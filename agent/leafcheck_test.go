package agent

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/testkit"
)

var adminID = spiffeid.RequireFromString("spiffe://cluster.local/ns/ops/sa/admin")

// mintTemplate returns a mint that has the intermediate sign tmpl for the
// CSR's key, as a misbehaving issuer would.
func mintTemplate(tmpl x509.Certificate) func(*ca.Authority, crypto.PublicKey) (*x509.Certificate, error) {
	return func(inter *ca.Authority, pub crypto.PublicKey) (*x509.Certificate, error) {
		tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
		tmpl.Subject = pkix.Name{CommonName: "leaf"}
		tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Minute), time.Now().Add(time.Hour)
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
		der, err := x509.CreateCertificate(rand.Reader, &tmpl, inter.Certificate, pub, inter.Signer)
		if err != nil {
			return nil, err
		}
		return x509.ParseCertificate(der)
	}
}

func urls(ids ...spiffeid.ID) []*url.URL {
	var out []*url.URL
	for _, id := range ids {
		out = append(out, id.URL())
	}
	return out
}

// TestAgentRefusesWrongLeaf has an issuer hand the agent certificates it
// must not use: another workload's identity, a CA certificate, one without
// the digitalSignature usage, one with two identities. The agent serves
// none of them, says why in its log and its readiness, and keeps retrying.
func TestAgentRefusesWrongLeaf(t *testing.T) {
	tree := testkit.New(t, testkit.Options{Now: time.Now().Add(-time.Hour)})
	for _, tc := range []struct {
		name string
		tmpl x509.Certificate
		want string
	}{
		{"another SPIFFE ID", x509.Certificate{URIs: urls(adminID), KeyUsage: x509.KeyUsageDigitalSignature}, "unexpected identity"},
		{"CA certificate", x509.Certificate{URIs: urls(webID), KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
			IsCA: true, BasicConstraintsValid: true}, "is a CA certificate"},
		{"CA flag only", x509.Certificate{URIs: urls(webID), KeyUsage: x509.KeyUsageDigitalSignature, IsCA: true, BasicConstraintsValid: true}, "is a CA certificate"},
		{"no digitalSignature", x509.Certificate{URIs: urls(webID), KeyUsage: x509.KeyUsageKeyEncipherment}, "lacks the digitalSignature"},
		{"two SPIFFE IDs", x509.Certificate{URIs: urls(webID, adminID), KeyUsage: x509.KeyUsageDigitalSignature}, "2 URI SANs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fi := newFakeIssuer(t, tree, false)
			fi.setMint(mintTemplate(tc.tmpl))
			ra := startAgentWith(t, fi.addr, fi.bundleFile, dummyToken(t), time.Hour, func(c *Config) { c.SPIFFEID = webID })
			line := ra.logs.waitFor(t, "certificate renewal failed", tc.want)
			if !strings.Contains(line, `"level":"WARN"`) {
				t.Errorf("logged as %s, want a WARN", line)
			}
			if snap, _ := ra.pub.Current(); snap.SVID() != nil {
				t.Errorf("the agent serves %s", snap.ID())
			}
			if err := ra.ready(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Ready: %v, want %q", err, tc.want)
			}
		})
	}
}

// TestAgentPinsIdentity: without a configured SPIFFE ID, a renewal that
// brings another identity than the first certificate's is refused, and the
// agent keeps serving the certificate it has.
func TestAgentPinsIdentity(t *testing.T) {
	tree := testkit.New(t, testkit.Options{Now: time.Now().Add(-time.Hour)})
	fi := newFakeIssuer(t, tree, false)
	ra := startAgentWith(t, fi.addr, fi.bundleFile, dummyToken(t), 2*time.Second, nil)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if id, err := fetchSVID(ctx, ra.cfg.WorkloadSocket); err != nil || id != webID.String() {
		t.Fatalf("first certificate: %q, %v", id, err)
	}
	first, _ := ra.pub.Current()
	fi.setMint(mintTemplate(x509.Certificate{URIs: urls(adminID), KeyUsage: x509.KeyUsageDigitalSignature}))
	ra.logs.waitFor(t, "certificate renewal failed", "unexpected identity", adminID.String())
	if snap, _ := ra.pub.Current(); snap.SVIDVersion() != first.SVIDVersion() || snap.ID() != webID {
		t.Errorf("after the refused renewal the agent serves %s serial %s, want %s serial %s", snap.ID(), snap.SVIDVersion(), webID, first.SVIDVersion())
	}
}
