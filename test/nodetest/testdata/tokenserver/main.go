// Command tokenserver is the test pod's program: it serves, on -listen, the
// contents of the file -token (GET /token), so that a test outside the pod
// can read the projected service-account token the kubelet mounted.
package main

import (
	"flag"
	"log"
	"net/http"
	"os"
)

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
	log.Printf("tokenserver: serving %s on %s", *token, *listen)
	log.Fatal(http.ListenAndServe(*listen, nil))
}
