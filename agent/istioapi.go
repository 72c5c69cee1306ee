package agent

import (
	"context"
	"errors"
	"fmt"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

// The one call the agent makes on the Istio CA API
// (istio.v1.auth.IstioCertificateService, security/v1alpha1/ca.proto),
// encoded by hand. The generated package (istio.io/api/security/v1alpha1)
// brings the legacy github.com/golang/protobuf runtime, its JSON support
// and reflect/protodesc with it, and registers their descriptors at start;
// the sidecar would carry all that for two messages of three fields. The
// wire format is that of the generated messages (agent tests decode and
// encode against them); the issuer side keeps using the generated package.
const createCertificateMethod = "/istio.v1.auth.IstioCertificateService/CreateCertificate"

// Field numbers of IstioCertificateRequest and IstioCertificateResponse.
const (
	fieldRequestCSR              protowire.Number = 1
	fieldRequestValidityDuration protowire.Number = 3
	fieldResponseCertChain       protowire.Number = 1
)

// certificateRequest is IstioCertificateRequest without its metadata, which
// the agent never sends.
type certificateRequest struct {
	// CSR is the PEM-encoded certificate signing request.
	CSR string
	// ValidityDuration is the requested lifetime in seconds; 0 leaves it to
	// the CA.
	ValidityDuration int64
}

// certificateResponse is IstioCertificateResponse.
type certificateResponse struct {
	// CertChain is the PEM-encoded chain, leaf first and root last.
	CertChain []string
}

// marshal encodes r as proto3 does: fields in number order, zero values
// left out.
func (r *certificateRequest) marshal() []byte {
	var b []byte
	if r.CSR != "" {
		b = protowire.AppendTag(b, fieldRequestCSR, protowire.BytesType)
		b = protowire.AppendString(b, r.CSR)
	}
	if r.ValidityDuration != 0 {
		b = protowire.AppendTag(b, fieldRequestValidityDuration, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(r.ValidityDuration))
	}
	return b
}

// unmarshal decodes an IstioCertificateResponse into r, skipping fields it
// does not know, as the generated code does.
func (r *certificateResponse) unmarshal(b []byte) error {
	r.CertChain = nil
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("certificate response: %w", protowire.ParseError(n))
		}
		b = b[n:]
		if num == fieldResponseCertChain && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return fmt.Errorf("certificate response: cert_chain: %w", protowire.ParseError(n))
			}
			if !utf8.Valid(v) {
				return errors.New("certificate response: cert_chain: invalid UTF-8")
			}
			r.CertChain = append(r.CertChain, string(v))
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return fmt.Errorf("certificate response: field %d: %w", num, protowire.ParseError(n))
		}
		b = b[n:]
	}
	return nil
}

// istioCodec carries certificateRequest and certificateResponse on a gRPC
// call. Its name is that of gRPC's protobuf codec: on the wire the call is
// the one the generated client makes.
type istioCodec struct{}

func (istioCodec) Name() string { return "proto" }

func (istioCodec) Marshal(v any) (mem.BufferSlice, error) {
	r, ok := v.(*certificateRequest)
	if !ok {
		return nil, fmt.Errorf("istio CA codec cannot encode %T", v)
	}
	return mem.BufferSlice{mem.SliceBuffer(r.marshal())}, nil
}

func (istioCodec) Unmarshal(data mem.BufferSlice, v any) error {
	r, ok := v.(*certificateResponse)
	if !ok {
		return fmt.Errorf("istio CA codec cannot decode into %T", v)
	}
	return r.unmarshal(data.Materialize())
}

// createCertificate calls IstioCertificateService.CreateCertificate on conn.
func createCertificate(ctx context.Context, conn grpc.ClientConnInterface, req *certificateRequest) (*certificateResponse, error) {
	resp := new(certificateResponse)
	if err := conn.Invoke(ctx, createCertificateMethod, req, resp, grpc.ForceCodecV2(istioCodec{})); err != nil {
		return nil, err
	}
	return resp, nil
}
