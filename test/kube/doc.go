// Package kube tests meshca's Kubernetes attestation against a real
// kube-apiserver and etcd (started by test/kubetest on 127.0.0.1): a real
// issuer serving the Istio CA API over TLS, a real SQLite store, tokens from
// the API server's own TokenRequest, and `meshca issuer serve` as a process.
// It has no non-test code.
//
// Run with `go test ./test/kube` after `make testbed-kube`; `make test` does
// both. Without the test-bed binaries the tests skip, or fail when CI=true.
package kube
