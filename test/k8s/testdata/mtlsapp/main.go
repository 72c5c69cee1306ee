// Command mtlsapp is the workload of the end-to-end suite on the test node:
// it gets its X509-SVID and bundle from the SPIFFE Workload API its
// meshca-agent sidecar serves (SPIFFE_ENDPOINT_SOCKET), serves HTTPS with
// mutual TLS to one peer SPIFFE ID, and calls that peer over mutual TLS
// when the test asks. It is a test program, built into an image by the
// test; it is not part of meshca.
//
// -listen serves mutual TLS: GET / answers "hello PEER from SELF" to a
// client whose SVID has -peer-id. -status serves plain HTTP to the test on
// the node: /svid is the current SVID chain (PEM), /call makes one mutual
// TLS request to -peer and returns its answer (502 with the error if it
// fails), /token the pod's projected token at -token-file, if set (so
// that the test can present it after the pod is gone).
//
// Both ends also refuse a peer whose certificate is on a CRL the agent
// delivers over the Workload API (the crl field), within the handshake.
package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

func main() {
	listen := flag.String("listen", "", "mutual TLS address")
	status := flag.String("status", "", "plain HTTP address for the test")
	peer := flag.String("peer", "", "the peer's mutual TLS address")
	peerID := flag.String("peer-id", "", "the peer's SPIFFE ID")
	tokenFile := flag.String("token-file", "", "the pod's projected token, served on /token")
	flag.Parse()
	if err := run(*listen, *status, *peer, *peerID, *tokenFile); err != nil {
		log.Fatalf("mtlsapp: %v", err)
	}
}

func run(listen, status, peer, peerIDText, tokenFile string) error {
	peerID, err := spiffeid.FromString(peerIDText)
	if err != nil {
		return fmt.Errorf("-peer-id: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	start, cancel := context.WithTimeout(ctx, time.Minute)
	source, err := workloadapi.NewX509Source(start)
	cancel()
	if err != nil {
		return fmt.Errorf("workload API: %w", err)
	}
	defer source.Close()
	self, err := source.GetX509SVID()
	if err != nil {
		return err
	}
	log.Printf("mtlsapp: SVID %s", self.ID)

	// The handshake's checks are go-spiffe's (the peer's chain verified
	// against the bundle of its trust domain, and its ID authorized) and
	// then the CRLs'.
	revocations := &crls{}
	go revocations.watch(ctx, os.Getenv("SPIFFE_ENDPOINT_SOCKET"))
	authorizeID := tlsconfig.AuthorizeID(peerID)
	authorize := func(id spiffeid.ID, chains [][]*x509.Certificate) error {
		if err := authorizeID(id, chains); err != nil {
			return err
		}
		return revocations.check(chains[0])
	}
	server := &http.Server{
		Addr:              listen,
		TLSConfig:         tlsconfig.MTLSServerConfig(source, source, authorize),
		ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			id, err := x509svid.IDFromCert(r.TLS.PeerCertificates[0])
			if err != nil {
				http.Error(w, err.Error(), http.StatusForbidden)
				return
			}
			fmt.Fprintf(w, "hello %s from %s", id, self.ID)
		}),
	}
	// Every call is a new handshake: a kept-alive connection would carry
	// on past the peer's revocation, which is checked only in handshakes.
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig:   tlsconfig.MTLSClientConfig(source, source, authorize),
		DisableKeepAlives: true,
	}}
	mux := statusHandler(source, client, peer, tokenFile)
	statusServer := &http.Server{Addr: status, Handler: mux, ReadHeaderTimeout: 5 * time.Second}

	errs := make(chan error, 2)
	go func() { errs <- server.ListenAndServeTLS("", "") }()
	go func() { errs <- statusServer.ListenAndServe() }()
	log.Printf("mtlsapp: serving mutual TLS on %s, status on %s", listen, status)
	select {
	case err := <-errs:
		return err
	case <-ctx.Done():
		_ = server.Close()
		_ = statusServer.Close()
		return nil
	}
}

// statusHandler serves the test: /svid, /call (through client, to peer)
// and /token.
func statusHandler(source *workloadapi.X509Source, client *http.Client, peer, tokenFile string) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/svid", func(w http.ResponseWriter, _ *http.Request) {
		svid, err := source.GetX509SVID()
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		for _, c := range svid.Certificates {
			_ = pem.Encode(w, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
		}
	})
	mux.HandleFunc("/call", func(w http.ResponseWriter, _ *http.Request) {
		resp, err := client.Get("https://" + peer + "/")
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if resp.StatusCode != http.StatusOK {
			http.Error(w, fmt.Sprintf("peer answered %s: %s", resp.Status, body), http.StatusBadGateway)
			return
		}
		_, _ = w.Write(body)
	})
	mux.HandleFunc("/token", func(w http.ResponseWriter, _ *http.Request) {
		if tokenFile == "" {
			http.NotFound(w, nil)
			return
		}
		token, err := os.ReadFile(tokenFile)
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write(token)
	})
	return mux
}
