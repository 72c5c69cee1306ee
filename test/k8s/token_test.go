package k8s

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	pb "istio.io/api/security/v1alpha1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshca/meshca/internal/testkit"
)

// checkDeletedPodToken takes w's projected token, has the issuer sign
// with it (as the sidecar does), deletes the pod, and waits until the
// issuer refuses the token: pod binding, after at most the attestation
// cache's TTL.
func checkDeletedPodToken(t *testing.T, r *release, w *workload) {
	token, err := testkit.Get("http://" + w.status + "/token")
	if err != nil {
		t.Fatal(err)
	}
	client := r.issuerClient(t)
	if err := issue(client, token); err != nil {
		t.Fatalf("the live pod's token is refused: %v", err)
	}
	ctx := context.Background()
	if err := r.n.Admin.CoreV1().Pods(w.ns).Delete(ctx, w.name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, time.Minute, "pod "+w.name+" gone", func() error {
		_, err := r.n.Admin.CoreV1().Pods(w.ns).Get(ctx, w.name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return errors.New("still there")
	})
	deleted := time.Now()
	testkit.Eventually(t, 30*time.Second, "the deleted pod's token refused", func() error {
		err := issue(client, token)
		if status.Code(err) == codes.Unauthenticated {
			return nil
		}
		return errors.New("issue: " + status.Code(err).String())
	})
	t.Logf("the deleted pod's token refused %.1fs after the deletion (attestation cache TTL %v)",
		time.Since(deleted).Seconds(), r.values["issuer"].(map[string]any)["attestation"].(map[string]any)["cacheTTL"])
}

// issuerClient is a client of the issuer replicas, as a sidecar dials
// them: the node's address, the Service's name, the chart's root.
func (r *release) issuerClient(t *testing.T) pb.IstioCertificateServiceClient {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(r.root)
	conn, err := grpc.NewClient(r.issuerAddr, grpc.WithTransportCredentials(
		credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: r.serverName})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return pb.NewIstioCertificateServiceClient(conn)
}

// issue asks for a certificate with token as istio-agent does.
func issue(client pb.IstioCertificateServiceClient, token string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return err
	}
	csr := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(),
		"authorization", "Bearer "+token), 10*time.Second)
	defer cancel()
	_, err = client.CreateCertificate(ctx, &pb.IstioCertificateRequest{Csr: string(csr), ValidityDuration: 600})
	return err
}
