// Package sdstest is an SDS v3 client that behaves as Envoy's SDS
// subscriptions do (PROTOCOLS.md): one StreamSecrets stream per secret name,
// the node only on the stream's first request, and every response checked
// the way Envoy checks it — exactly one resource, of the Secret type, named
// as requested, with a loadable certificate and key or CA bundle — then
// ACKed (version_info and response_nonce echoed) or NACKed (version_info =
// the last accepted version, response_nonce = the rejected response's nonce,
// error_detail set). It is for tests: no Envoy binary can be had here.
package sdstest

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"go.step.sm/crypto/pemutil"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
)

// secretTypeURL is the type of SDS resources.
const secretTypeURL = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

// Envoy is one emulated Envoy process: a connection to an SDS server (like
// Envoy's static "sds-grpc" cluster) and its node identity.
type Envoy struct {
	Node   *corev3.Node
	conn   *grpc.ClientConn
	client secretv3.SecretDiscoveryServiceClient
}

// Dial connects to an SDS server on the Unix socket at path. It does not
// block.
func Dial(path string, node *corev3.Node) (*Envoy, error) {
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("dial sds %s: %w", path, err)
	}
	return &Envoy{Node: node, conn: conn, client: secretv3.NewSecretDiscoveryServiceClient(conn)}, nil
}

// Client returns the raw SDS client, for requests Envoy would not make.
func (e *Envoy) Client() secretv3.SecretDiscoveryServiceClient { return e.client }

// Close closes the connection and with it every subscription.
func (e *Envoy) Close() error { return e.conn.Close() }

// Subscription is one secret subscription: one stream.
type Subscription struct {
	// Name is the subscribed resource name.
	Name   string
	stream grpc.BidiStreamingClient[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]
	cancel context.CancelFunc
	recv   chan received

	accepted string // last accepted version
	nonce    string // nonce of the last response received
}

type received struct {
	resp *discoveryv3.DiscoveryResponse
	err  error
}

// Subscribe opens a stream and sends the first request for name, with the
// node. The stream lives until Close or until ctx is cancelled.
func (e *Envoy) Subscribe(ctx context.Context, name string) (*Subscription, error) {
	ctx, cancel := context.WithCancel(ctx)
	stream, err := e.client.StreamSecrets(ctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("open sds stream: %w", err)
	}
	s := &Subscription{Name: name, stream: stream, cancel: cancel, recv: make(chan received, 16)}
	go s.receive()
	first := &discoveryv3.DiscoveryRequest{Node: e.Node, ResourceNames: []string{name}, TypeUrl: secretTypeURL}
	if err := stream.Send(first); err != nil && !errors.Is(err, io.EOF) {
		cancel()
		return nil, fmt.Errorf("send first sds request: %w", err)
	}
	// io.EOF: the server ended the stream already (a stream cap, say); as
	// with gRPC streams generally, Recv and Next report its status.
	return s, nil
}

func (s *Subscription) receive() {
	for {
		resp, err := s.stream.Recv()
		s.recv <- received{resp, err}
		if err != nil {
			return
		}
	}
}

// Close ends the stream.
func (s *Subscription) Close() {
	_ = s.stream.CloseSend() // the cancel below ends the stream regardless
	s.cancel()
}

// Recv returns the next response without checking or answering it, or the
// stream's error (a gRPC status) if it ended.
func (s *Subscription) Recv(ctx context.Context) (*discoveryv3.DiscoveryResponse, error) {
	select {
	case r := <-s.recv:
		if r.err != nil {
			s.recv <- r // keep reporting the end
			return nil, r.err
		}
		s.nonce = r.resp.GetNonce()
		return r.resp, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for an sds response to %q: %w", s.Name, ctx.Err())
	}
}

// Update is an accepted secret.
type Update struct {
	Version, Nonce string
	// Chain and Key are set for a TLS certificate secret.
	Chain []*x509.Certificate
	Key   crypto.PrivateKey
	// Roots is set for a validation context secret.
	Roots []*x509.Certificate
	// CRLs are a validation context's CRLs (validation_context.crl), in
	// the order served; nil when it has none.
	CRLs []*x509.RevocationList
}

// errRejected wraps the reason a response was NACKed.
var errRejected = errors.New("sds response rejected")

// Next receives the next response and handles it as Envoy does: ACK and
// return it when valid; NACK and return an error wrapping ErrRejected when
// not.
func (s *Subscription) Next(ctx context.Context) (*Update, error) {
	resp, err := s.Recv(ctx)
	if err != nil {
		return nil, err
	}
	u, checkErr := Check(resp, s.Name)
	if checkErr != nil {
		if err := s.NACK(resp, checkErr.Error()); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %w", errRejected, checkErr)
	}
	if err := s.ACK(resp); err != nil {
		return nil, err
	}
	return u, nil
}

// ACK accepts resp: the next request echoes its version and nonce.
func (s *Subscription) ACK(resp *discoveryv3.DiscoveryResponse) error {
	s.accepted = resp.GetVersionInfo()
	return s.Send(&discoveryv3.DiscoveryRequest{
		VersionInfo: s.accepted, ResourceNames: []string{s.Name}, TypeUrl: secretTypeURL, ResponseNonce: resp.GetNonce(),
	})
}

// NACK rejects resp: the request keeps the last accepted version, echoes
// resp's nonce and carries the reason.
func (s *Subscription) NACK(resp *discoveryv3.DiscoveryResponse, reason string) error {
	return s.Send(&discoveryv3.DiscoveryRequest{
		VersionInfo: s.accepted, ResourceNames: []string{s.Name}, TypeUrl: secretTypeURL, ResponseNonce: resp.GetNonce(),
		ErrorDetail: &status.Status{Code: int32(codes.Internal), Message: reason},
	})
}

// Rename switches the stream to a new resource name, as an xDS client may
// (Envoy itself opens a new stream instead): the request carries the
// current version and nonce and the new name.
func (s *Subscription) Rename(name string) error {
	s.Name = name
	return s.Send(&discoveryv3.DiscoveryRequest{
		VersionInfo: s.accepted, ResourceNames: []string{name}, TypeUrl: secretTypeURL, ResponseNonce: s.nonce,
	})
}

// Accepted returns the last accepted version and the nonce of the last
// response received.
func (s *Subscription) Accepted() (version, nonce string) { return s.accepted, s.nonce }

// Send sends a raw request on the stream.
func (s *Subscription) Send(req *discoveryv3.DiscoveryRequest) error {
	if err := s.stream.Send(req); err != nil {
		return fmt.Errorf("send sds request: %w", err)
	}
	return nil
}

// Check validates resp as Envoy's SDS subscription does for the resource
// name: exactly one resource, a Secret named name that passes the proto's
// validation rules, and a certificate chain with its matching private key or
// a CA bundle (with CRLs, if any, that parse), all inline PEM.
func Check(resp *discoveryv3.DiscoveryResponse, name string) (*Update, error) {
	if resp.GetTypeUrl() != secretTypeURL {
		return nil, fmt.Errorf("response type_url %q", resp.GetTypeUrl())
	}
	if n := len(resp.GetResources()); n != 1 {
		return nil, fmt.Errorf("unexpected SDS secrets length: %d", n)
	}
	res := resp.GetResources()[0]
	if res.GetTypeUrl() != secretTypeURL {
		return nil, fmt.Errorf("resource type_url %q", res.GetTypeUrl())
	}
	var secret tlsv3.Secret
	if err := res.UnmarshalTo(&secret); err != nil {
		return nil, fmt.Errorf("decode secret: %w", err)
	}
	if secret.GetName() != name {
		return nil, fmt.Errorf("unexpected SDS secret (expecting %s): %s", name, secret.GetName())
	}
	if err := secret.ValidateAll(); err != nil {
		return nil, fmt.Errorf("secret %s: %w", name, err)
	}
	u := &Update{Version: resp.GetVersionInfo(), Nonce: resp.GetNonce()}
	switch {
	case secret.GetTlsCertificate() != nil:
		tc := secret.GetTlsCertificate()
		chainPEM, keyPEM := tc.GetCertificateChain().GetInlineBytes(), tc.GetPrivateKey().GetInlineBytes()
		pair, err := tls.X509KeyPair(chainPEM, keyPEM)
		if err != nil {
			return nil, fmt.Errorf("failed to load certificate chain or key for %s: %w", name, err)
		}
		if u.Chain, err = pemutil.ParseCertificateBundle(chainPEM); err != nil {
			return nil, fmt.Errorf("certificate chain of %s: %w", name, err)
		}
		u.Key = pair.PrivateKey
	case secret.GetValidationContext() != nil:
		caPEM := secret.GetValidationContext().GetTrustedCa().GetInlineBytes()
		roots, err := pemutil.ParseCertificateBundle(caPEM)
		if err != nil || len(roots) == 0 {
			return nil, fmt.Errorf("failed to load trusted CA certificates from %s: %v", name, err)
		}
		u.Roots = roots
		if crl := secret.GetValidationContext().GetCrl(); crl != nil {
			if u.CRLs, err = parseCRLs(crl.GetInlineBytes()); err != nil {
				return nil, fmt.Errorf("failed to load CRL from %s: %w", name, err)
			}
		}
	default:
		return nil, fmt.Errorf("secret %s is neither a TLS certificate nor a validation context", name)
	}
	return u, nil
}

// parseCRLs decodes concatenated "X509 CRL" PEM blocks, as Envoy loads
// validation_context.crl: at least one, each a CRL.
func parseCRLs(data []byte) ([]*x509.RevocationList, error) {
	var out []*x509.RevocationList
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "X509 CRL" {
			return nil, fmt.Errorf("PEM block %q is not a CRL", block.Type)
		}
		rl, err := x509.ParseRevocationList(block.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, rl)
	}
	if len(out) == 0 {
		return nil, errors.New("no CRL")
	}
	return out, nil
}
