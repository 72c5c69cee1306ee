package ca

import (
	"bytes"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/asn1"
	"math/big"
	"net/url"
	"testing"
	"time"
)

// FuzzLeafDER holds the hand-encoded workload leaf to x509.CreateCertificate
// over serials, validity instants (both ASN.1 time forms) and SPIFFE IDs:
// either both refuse the template or both produce the same TBSCertificate.
func FuzzLeafDER(f *testing.F) {
	f.Add([]byte{0x7f, 0xab, 0xcd}, int64(1796610605), int64(3600), "cluster.local", "/ns/default/sa/web", "")
	f.Add([]byte{0x01}, int64(2556144000), int64(86400), "td", "/ns/a/sa/b", "/ns/c/sa/d")
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		int64(-631152000), int64(1), "example.org", "/x%20y", "/é")
	now := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	a := testIntermediate(f, elliptic.P256(), now.AddDate(-30, 0, 0))
	alg, _, _ := a.leafDERSigner()
	pub := mustKey(f, elliptic.P256()).Public()
	f.Fuzz(func(t *testing.T, serial []byte, notBefore, life int64, host, path1, path2 string) {
		if len(serial) == 0 || len(serial) > 20 || life <= 0 {
			return
		}
		uris := []*url.URL{{Scheme: "spiffe", Host: host, Path: path1}}
		if path2 != "" {
			uris = append(uris, &url.URL{Scheme: "spiffe", Host: host, Path: path2})
		}
		nb := time.Unix(notBefore, 0)
		tmpl := &x509.Certificate{
			SerialNumber: new(big.Int).SetBytes(serial), URIs: uris,
			NotBefore: nb, NotAfter: nb.Add(time.Duration(life) * time.Second),
			KeyUsage: x509.KeyUsageDigitalSignature, BasicConstraintsValid: true,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		}
		want, wantErr := x509.CreateCertificate(rand.Reader, tmpl, a.Certificate, pub, a.Signer)
		got, gotErr := a.leafTBS(tmpl, pub, alg)
		if wantErr != nil || gotErr != nil {
			if (wantErr == nil) != (gotErr == nil) {
				t.Fatalf("CreateCertificate error %v, leafTBS error %v", wantErr, gotErr)
			}
			return
		}
		// The TBS is read without x509.ParseCertificate, which refuses some
		// names CreateCertificate encodes: the encodings are compared.
		var outer struct {
			TBS asn1.RawValue
			Alg asn1.RawValue
			Sig asn1.BitString
		}
		if _, err := asn1.Unmarshal(want, &outer); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, outer.TBS.FullBytes) {
			t.Fatalf("TBS differs from CreateCertificate's for %v\n got %x\nwant %x", tmpl.URIs, got, outer.TBS.FullBytes)
		}
	})
}
