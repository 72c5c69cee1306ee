package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"log"
	"slices"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// crls are the CRLs of the Workload API's X509SVIDResponse.crl field: the
// agent sends only CRLs it verified, again whenever they change. go-spiffe's
// X509Source does not surface them, so the app reads the stream itself.
type crls struct {
	mu    sync.Mutex
	lists []*x509.RevocationList
}

// watch follows FetchX509SVID on the Workload API at addr (a gRPC target
// such as unix:///path) until ctx ends, reconnecting after errors.
func (c *crls) watch(ctx context.Context, addr string) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Printf("mtlsapp: workload API for CRLs: %v", err)
		return
	}
	defer conn.Close()
	client := workload.NewSpiffeWorkloadAPIClient(conn)
	ctx = metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true")
	for ctx.Err() == nil {
		if err := c.follow(ctx, client); ctx.Err() == nil {
			log.Printf("mtlsapp: CRL stream: %v", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// follow applies the CRLs of every response of one FetchX509SVID stream
// until it ends; it returns why.
func (c *crls) follow(ctx context.Context, client workload.SpiffeWorkloadAPIClient) error {
	stream, err := client.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
	if err != nil {
		return err
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return err
		}
		var lists []*x509.RevocationList
		revoked := 0
		for _, der := range resp.GetCrl() {
			rl, err := x509.ParseRevocationList(der)
			if err != nil {
				log.Printf("mtlsapp: CRL does not parse, ignored: %v", err)
				continue
			}
			lists = append(lists, rl)
			revoked += len(rl.RevokedCertificateEntries)
		}
		c.mu.Lock()
		c.lists = lists
		c.mu.Unlock()
		log.Printf("mtlsapp: %d CRLs, %d revoked certificates", len(lists), revoked)
	}
}

// check refuses chain (leaf first, as the handshake verified it) if a held
// CRL signed by the leaf's issuer, chain[1], lists the leaf's serial.
func (c *crls) check(chain []*x509.Certificate) error {
	if len(chain) < 2 {
		return fmt.Errorf("peer chain without its issuer")
	}
	leaf, issuer := chain[0], chain[1]
	c.mu.Lock()
	lists := c.lists
	c.mu.Unlock()
	for _, rl := range lists {
		if !bytes.Equal(rl.RawIssuer, leaf.RawIssuer) || rl.CheckSignatureFrom(issuer) != nil {
			continue // not a CRL of the leaf's issuer
		}
		if slices.ContainsFunc(rl.RevokedCertificateEntries, func(e x509.RevocationListEntry) bool {
			return e.SerialNumber.Cmp(leaf.SerialNumber) == 0
		}) {
			return fmt.Errorf("peer certificate %x of %v is revoked (CRL number %v)", leaf.SerialNumber, leaf.URIs, rl.Number)
		}
	}
	return nil
}
