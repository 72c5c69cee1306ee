// Command tokenserver is the test pod's program: it serves, on -listen, the
// contents of the file -token (GET /token), so that a test outside the pod
// can read the projected service-account token the kubelet mounted, and the
// API server's /version as the pod reaches it with its in-cluster
// configuration (GET /apiserver-version).
package main

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"time"
)

// saDir is where the kubelet mounts the pod's default service-account
// token and the cluster's CA.
const saDir = "/var/run/secrets/kubernetes.io/serviceaccount/"

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to serve on")
	token := flag.String("token", "/var/run/secrets/meshca/token", "token file")
	flag.Parse()
	http.HandleFunc("GET /token", func(w http.ResponseWriter, _ *http.Request) {
		b, err := os.ReadFile(*token)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Write(b)
	})
	http.HandleFunc("GET /apiserver-version", apiserverVersion)
	log.Printf("tokenserver: serving %s on %s", *token, *listen)
	log.Fatal(http.ListenAndServe(*listen, nil))
}

// apiserverVersion proxies GET /version of the API server at
// $KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT, authenticated with the
// pod's service-account token and verified by the cluster CA.
func apiserverVersion(w http.ResponseWriter, _ *http.Request) {
	ca, err := os.ReadFile(saDir + "ca.crt")
	if err == nil {
		var tok []byte
		if tok, err = os.ReadFile(saDir + "token"); err == nil {
			pool := x509.NewCertPool()
			pool.AppendCertsFromPEM(ca)
			c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
			url := "https://" + net.JoinHostPort(os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")) + "/version"
			req, _ := http.NewRequest(http.MethodGet, url, nil)
			req.Header.Set("Authorization", "Bearer "+string(tok))
			var resp *http.Response
			if resp, err = c.Do(req); err == nil {
				defer resp.Body.Close()
				w.WriteHeader(resp.StatusCode)
				io.Copy(w, io.LimitReader(resp.Body, 64<<10))
				return
			}
		}
	}
	http.Error(w, err.Error(), http.StatusBadGateway)
}
