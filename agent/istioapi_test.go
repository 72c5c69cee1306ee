package agent

import (
	"bytes"
	"strings"
	"testing"

	pb "istio.io/api/security/v1alpha1"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// The hand-written encoding of the Istio CA call must be the generated
// messages' wire format, byte for byte for requests.
func TestCertificateRequestWire(t *testing.T) {
	csr := "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n"
	for _, tc := range []struct {
		name string
		req  certificateRequest
	}{
		{name: "csr and validity", req: certificateRequest{CSR: csr, ValidityDuration: 3600}},
		{name: "csr only", req: certificateRequest{CSR: csr}},
		{name: "validity only", req: certificateRequest{ValidityDuration: 86400 * 90}},
		{name: "negative validity", req: certificateRequest{CSR: "x", ValidityDuration: -1}},
		{name: "empty", req: certificateRequest{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := istioCodec{}.Marshal(&tc.req)
			if err != nil {
				t.Fatal(err)
			}
			want, err := proto.MarshalOptions{Deterministic: true}.Marshal(&pb.IstioCertificateRequest{
				Csr: tc.req.CSR, ValidityDuration: tc.req.ValidityDuration,
			})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Materialize(), want) {
				t.Errorf("encoded %x, generated code encodes %x", got.Materialize(), want)
			}
			var back pb.IstioCertificateRequest
			if err := proto.Unmarshal(got.Materialize(), &back); err != nil {
				t.Fatal(err)
			}
			if back.GetCsr() != tc.req.CSR || back.GetValidityDuration() != tc.req.ValidityDuration {
				t.Errorf("generated code decodes csr %q validity %d, want %q %d", back.GetCsr(), back.GetValidityDuration(),
					tc.req.CSR, tc.req.ValidityDuration)
			}
		})
	}
	if _, err := (istioCodec{}).Marshal(&certificateResponse{}); err == nil {
		t.Error("codec encoded a response type")
	}
}

func TestCertificateResponseWire(t *testing.T) {
	chain := []string{"leaf\n", "intermediate\n", "root\n"}
	generated, err := proto.Marshal(&pb.IstioCertificateResponse{CertChain: chain})
	if err != nil {
		t.Fatal(err)
	}
	// Fields a newer issuer might add: a varint, a fixed64 and a message,
	// around and between the chain's entries.
	var unknown []byte
	unknown = protowire.AppendTag(unknown, 2, protowire.VarintType)
	unknown = protowire.AppendVarint(unknown, 7)
	unknown = protowire.AppendTag(unknown, 9, protowire.Fixed64Type)
	unknown = protowire.AppendFixed64(unknown, 1)
	unknown = protowire.AppendTag(unknown, 4, protowire.BytesType)
	unknown = protowire.AppendBytes(unknown, []byte{0x08, 0x01})
	oneEntry := protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "leaf\n")
	badUTF8 := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), []byte{0xff, 0xfe})

	for _, tc := range []struct {
		name    string
		data    []byte
		want    []string
		wantErr bool
	}{
		{name: "generated", data: generated, want: chain},
		{name: "unknown fields skipped", data: bytes.Join([][]byte{unknown, generated[:len(oneEntry)], unknown, generated[len(oneEntry):]}, nil), want: chain},
		{name: "empty", data: nil, want: nil},
		{name: "truncated", data: generated[:len(generated)-2], wantErr: true},
		{name: "invalid UTF-8", data: badUTF8, wantErr: true},
		{name: "truncated unknown field", data: unknown[:len(unknown)-1], wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got certificateResponse
			err := istioCodec{}.Unmarshal(mem.BufferSlice{mem.SliceBuffer(tc.data)}, &got)
			// The generated code must agree on what is valid.
			genErr := proto.Unmarshal(tc.data, new(pb.IstioCertificateResponse))
			if (genErr != nil) != tc.wantErr {
				t.Fatalf("generated code: error %v, test expects error %v", genErr, tc.wantErr)
			}
			if tc.wantErr {
				if err == nil {
					t.Fatalf("decoded %q, want an error", got.CertChain)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(got.CertChain, "|") != strings.Join(tc.want, "|") || len(got.CertChain) != len(tc.want) {
				t.Errorf("cert chain %q, want %q", got.CertChain, tc.want)
			}
		})
	}
	if err := (istioCodec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(generated)}, &certificateRequest{}); err == nil {
		t.Error("codec decoded into a request type")
	}
}
