package trust_test

import (
	"bytes"
	"encoding/pem"
	"testing"

	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/trust"
)

func TestParseCertificates(t *testing.T) {
	a := testkit.New(t, testkit.Options{Now: t0})
	root, inter := a.Root.Certificate, a.Intermediate.Certificate
	chainPEM := trust.EncodeCertificates(inter, root)
	keyBlock := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}})
	withHeaders := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED"}, Bytes: root.Raw})
	corrupt := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.Raw[:len(root.Raw)/2]})
	for _, tc := range []struct {
		name string
		data []byte
		want [][]byte // DER of the certificates, in order; nil: an error
	}{
		{name: "PEM chain in order", data: chainPEM, want: [][]byte{inter.Raw, root.Raw}},
		{name: "other blocks and text skipped", data: bytes.Join([][]byte{[]byte("# roots\n"), keyBlock, withHeaders, chainPEM}, nil), want: [][]byte{inter.Raw, root.Raw}},
		{name: "DER", data: root.Raw, want: [][]byte{root.Raw}},
		{name: "garbage", data: []byte("not pem")},
		{name: "empty", data: nil},
		{name: "no certificate block", data: keyBlock},
		{name: "corrupt certificate", data: append(trust.EncodeCertificates(root), corrupt...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := trust.ParseCertificates(tc.data)
			if tc.want == nil {
				if err == nil {
					t.Fatalf("ParseCertificates accepted it: %d certificates", len(got))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("%d certificates, want %d", len(got), len(tc.want))
			}
			for i, c := range got {
				if !bytes.Equal(c.Raw, tc.want[i]) {
					t.Errorf("certificate %d is %q, want the one at %d of the input", i, c.Subject, i)
				}
			}
		})
	}
}

func TestParseCertificate(t *testing.T) {
	a := testkit.New(t, testkit.Options{Now: t0})
	root, inter := a.Root.Certificate, a.Intermediate.Certificate
	keyBlock := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}})
	got, err := trust.ParseCertificate(append(keyBlock, trust.EncodeCertificates(inter, root)...))
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(inter) {
		t.Errorf("got %q, want the first certificate %q", got.Subject, inter.Subject)
	}
	for name, data := range map[string][]byte{
		"DER":                 root.Raw,
		"garbage":             []byte("not pem"),
		"no certificate":      keyBlock,
		"corrupt certificate": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.Raw[:10]}),
	} {
		if _, err := trust.ParseCertificate(data); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
