package interop

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// secretTypeURL is the type of SDS resources.
const secretTypeURL = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

// envoyNode is the node an injected sidecar's Envoy sends (type~ip~pod.namespace~domain).
var envoyNode = &corev3.Node{
	Id:      fmt.Sprintf("sidecar~127.0.0.1~interop-test.%s~%s.svc.cluster.local", namespace, namespace),
	Cluster: "interop-test." + namespace,
}

// sdsConn is one connection of an Envoy-like SDS v3 client to a Unix socket, as Envoy's static
// "sds-grpc" cluster: a stream per secret name, the node on each stream's first request, every
// response checked as Envoy checks it (one resource of the Secret type, named as requested)
// and ACKed.
type sdsConn struct {
	conn   *grpc.ClientConn
	client secretv3.SecretDiscoveryServiceClient
}

// dialSDS connects to the SDS server on socket; the connection is closed when the test ends.
func dialSDS(t testing.TB, socket string) *sdsConn {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial sds %s: %v", socket, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &sdsConn{conn: conn, client: secretv3.NewSecretDiscoveryServiceClient(conn)}
}

// sdsStream is one subscription.
type sdsStream struct {
	name   string
	stream grpc.BidiStreamingClient[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]
}

// subscribe opens a stream for name and sends its first request. The stream lives until ctx
// ends.
func (c *sdsConn) subscribe(ctx context.Context, name string) (*sdsStream, error) {
	stream, err := c.client.StreamSecrets(ctx)
	if err != nil {
		return nil, fmt.Errorf("open sds stream for %q: %w", name, err)
	}
	req := &discoveryv3.DiscoveryRequest{Node: envoyNode, ResourceNames: []string{name}, TypeUrl: secretTypeURL}
	if err := stream.Send(req); err != nil {
		return nil, fmt.Errorf("send first sds request for %q: %w", name, err)
	}
	return &sdsStream{name: name, stream: stream}, nil
}

// next waits for the next response (until the stream's context ends), checks it and ACKs it.
func (s *sdsStream) next() (*tlsv3.Secret, error) {
	resp, err := s.stream.Recv()
	if err != nil {
		return nil, fmt.Errorf("sds response for %q: %w", s.name, err)
	}
	if resp.GetTypeUrl() != secretTypeURL {
		return nil, fmt.Errorf("sds response for %q has type %q", s.name, resp.GetTypeUrl())
	}
	if n := len(resp.GetResources()); n != 1 {
		return nil, fmt.Errorf("sds response for %q has %d resources, want 1", s.name, n)
	}
	var secret tlsv3.Secret
	if err := resp.GetResources()[0].UnmarshalTo(&secret); err != nil {
		return nil, fmt.Errorf("sds response for %q: %w", s.name, err)
	}
	if secret.GetName() != s.name {
		return nil, fmt.Errorf("sds response for %q carries secret %q", s.name, secret.GetName())
	}
	ack := &discoveryv3.DiscoveryRequest{VersionInfo: resp.GetVersionInfo(), ResourceNames: []string{s.name},
		TypeUrl: secretTypeURL, ResponseNonce: resp.GetNonce()}
	if err := s.stream.Send(ack); err != nil {
		return nil, fmt.Errorf("ack sds response for %q: %w", s.name, err)
	}
	return &secret, nil
}

// fetchSecret subscribes to name and returns the first secret served.
func (c *sdsConn) fetchSecret(ctx context.Context, name string) (*tlsv3.Secret, error) {
	s, err := c.subscribe(ctx, name)
	if err != nil {
		return nil, err
	}
	return s.next()
}

// tlsCertificateOf returns a TLS certificate secret's chain (leaf first), after checking that
// its private key is the leaf's, as Envoy does when it loads the pair.
func tlsCertificateOf(secret *tlsv3.Secret) ([]*x509.Certificate, error) {
	tc := secret.GetTlsCertificate()
	if tc == nil {
		return nil, fmt.Errorf("secret %q is not a TLS certificate", secret.GetName())
	}
	chainPEM, keyPEM := tc.GetCertificateChain().GetInlineBytes(), tc.GetPrivateKey().GetInlineBytes()
	if _, err := tls.X509KeyPair(chainPEM, keyPEM); err != nil {
		return nil, fmt.Errorf("secret %q: %w", secret.GetName(), err)
	}
	return parsePEMCertificates(chainPEM)
}

// trustedCAOf returns the roots of a validation context secret.
func trustedCAOf(secret *tlsv3.Secret) ([]*x509.Certificate, error) {
	vc := secret.GetValidationContext()
	if vc == nil {
		return nil, fmt.Errorf("secret %q is not a validation context", secret.GetName())
	}
	return parsePEMCertificates(vc.GetTrustedCa().GetInlineBytes())
}

// parsePEMCertificates parses every CERTIFICATE block of data; it fails on none.
func parsePEMCertificates(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("unexpected PEM block %q", block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate")
	}
	return certs, nil
}
