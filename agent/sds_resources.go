package agent

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// SDS resource names the agent serves (PROTOCOLS.md): Istio's "default"
// (workload certificate and key) and "ROOTCA" (own trust domain's bundle),
// SPIRE's "ALL" (own and federated bundles), plus the workload's SPIFFE ID
// (certificate) and the ID spiffe://<td> of its own or of any other trust
// domain the agent knows (that domain's bundle).
const (
	ResourceDefault = "default"
	ResourceRootCA  = "ROOTCA"
	resourceAll     = "ALL"
)

// secretTypeURL is the type of every SDS resource.
const secretTypeURL = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

var (
	// errPending: the resource may exist but the agent cannot serve it yet
	// (no valid certificate, or the trust domain is not known yet). Streams
	// wait for it; FetchSecrets answers Unavailable.
	errPending = errors.New("not available yet")
	// errUnknownResource: the agent will never serve a resource of this name.
	errUnknownResource = errors.New("unknown resource")
)

// resourceKind says what a resource name resolves to.
type resourceKind int

const (
	kindCertificate resourceKind = iota + 1
	kindBundle
)

// classify resolves name against snap at now.
func classify(snap *snapshot, name string, now time.Time) (resourceKind, error) {
	switch name {
	case ResourceDefault:
		return kindCertificate, availableCert(snap, now)
	case ResourceRootCA, resourceAll:
		if snap.Bundle() == nil {
			return kindBundle, errPending
		}
		return kindBundle, nil
	}
	if !strings.HasPrefix(name, "spiffe://") {
		return 0, fmt.Errorf("%w %q", errUnknownResource, name)
	}
	// A SPIFFE ID or trust domain ID: only the certificate tells which ones
	// are ours.
	if snap.SVID() == nil {
		return 0, errPending
	}
	id := snap.ID()
	if name == id.String() {
		return kindCertificate, availableCert(snap, now)
	}
	if _, ok := snap.byDomain[name]; ok {
		return kindBundle, nil
	}
	return 0, fmt.Errorf("%w %q: this agent serves %s and the bundles of %s", errUnknownResource, name, id,
		strings.Join(slices.Sorted(maps.Keys(snap.byDomain)), ", "))
}

func availableCert(snap *snapshot, now time.Time) error {
	if !snap.Valid(now) {
		return errPending
	}
	return nil
}

// resolve builds the resources for names (one per name, in order) and the
// version of the whole set. It fails with errUnknownResource if any name is
// unknown, else with errPending if any is not available yet.
func resolve(snap *snapshot, names []string, now time.Time) ([]*anypb.Any, string, error) {
	kinds := make([]resourceKind, len(names))
	var pending bool
	for i, name := range names {
		kind, err := classify(snap, name, now)
		switch {
		case errors.Is(err, errUnknownResource):
			return nil, "", err
		case err != nil:
			pending = true
		}
		kinds[i] = kind
	}
	if pending {
		return nil, "", errPending
	}
	resources := make([]*anypb.Any, 0, len(names))
	version := ""
	for i, name := range names {
		kind := kinds[i]
		res, err := snap.cachedSDS(name, func() (*anypb.Any, error) { return anypb.New(buildSecret(snap, name, kind)) })
		if err != nil {
			return nil, "", fmt.Errorf("encode secret %q: %w", name, err)
		}
		resources = append(resources, res)
		if i > 0 {
			version += ","
		}
		if kind == kindCertificate {
			version += snap.SVIDVersion()
		} else {
			version += snap.sdsBundle(name).version
		}
	}
	return resources, version, nil
}

// buildSecret returns the Secret proto for name, of the given kind.
func buildSecret(snap *snapshot, name string, kind resourceKind) *tlsv3.Secret {
	if kind == kindCertificate {
		return &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: inline(snap.chainPEM),
			PrivateKey:       inline(snap.keyPEM),
		}}}
	}
	rs := snap.sdsBundle(name)
	vc := &tlsv3.CertificateValidationContext{TrustedCa: inline(rs.pem)}
	if len(rs.crlPEM) > 0 {
		vc.Crl = inline(rs.crlPEM)
	}
	return &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_ValidationContext{ValidationContext: vc}}
}

// sdsBundle returns the roots and CRLs served as the bundle resource name:
// ROOTCA and the own trust domain ID get the own trust domain's roots with
// the CRLs of every own (non-federated) trust domain, ALL the roots and
// CRLs of every trust domain, spiffe://<td> those of td.
func (s *snapshot) sdsBundle(name string) rootSet {
	switch name {
	case ResourceRootCA:
		return s.own
	case resourceAll:
		return s.all
	}
	return s.byDomain[name]
}

func inline(b []byte) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
}
