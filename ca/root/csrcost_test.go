package root

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
)

// hugeRSACSR is a PKCS#10 request for an RSA "key" of bits bits (a random
// odd modulus, exponent 2^31-1) with a signature of garbage: checking that
// signature costs a modular exponentiation of that size.
func hugeRSACSR(t *testing.T, bits int) []byte {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), uint(bits)))
	if err != nil {
		t.Fatal(err)
	}
	n.SetBit(n, bits-1, 1).SetBit(n, 0, 1)
	spki, err := x509.MarshalPKIXPublicKey(&rsa.PublicKey{N: n, E: 1<<31 - 1})
	if err != nil {
		t.Fatal(err)
	}
	subject, err := asn1.Marshal(pkix.Name{CommonName: "huge"}.ToRDNSequence())
	if err != nil {
		t.Fatal(err)
	}
	info, err := asn1.Marshal(struct {
		Version    int
		Subject    asn1.RawValue
		PublicKey  asn1.RawValue
		Attributes asn1.RawValue `asn1:"tag:0"`
	}{0, asn1.RawValue{FullBytes: subject}, asn1.RawValue{FullBytes: spki}, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true}})
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, bits/8)
	if _, err := rand.Read(sig); err != nil {
		t.Fatal(err)
	}
	der, err := asn1.Marshal(struct {
		Info      asn1.RawValue
		Algorithm pkix.AlgorithmIdentifier
		Signature asn1.BitString
	}{asn1.RawValue{FullBytes: info}, pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}}, asn1.BitString{Bytes: sig, BitLength: bits}})
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// TestEnrollRefusesHugeKeyBeforeItsSignature sends an unauthenticated
// Enroll whose CSR holds an RSA key of 64 Kibit with a garbage signature:
// the root refuses it for its key size, without spending a modular
// exponentiation of that size on the signature first.
func TestEnrollRefusesHugeKeyBeforeItsSignature(t *testing.T) {
	h := newHarness(t, nil)
	conn := h.dial(h.serve(), nil)
	huge := hugeRSACSR(t, 64<<10) // 8 KiB of modulus
	if _, err := x509.ParseCertificateRequest(huge); err != nil {
		t.Fatalf("the crafted CSR does not parse: %v", err)
	}
	good := csrFor(t, newKey(t))
	for name, req := range map[string]*meshcav1.EnrollRequest{
		"credential":   {JoinToken: "bogus", CredentialCsr: huge, IntermediateCsr: good},
		"intermediate": {JoinToken: "bogus", CredentialCsr: good, IntermediateCsr: huge},
	} {
		_, err := meshcav1.NewRootServiceClient(conn).Enroll(context.Background(), req)
		wantCode(t, err, codes.InvalidArgument)
		if msg := status.Convert(err).Message(); !strings.Contains(msg, "RSA key of 65536 bits is not allowed") {
			t.Errorf("%s CSR: error %q, want the key size refused before the signature is checked", name, msg)
		}
	}
}
