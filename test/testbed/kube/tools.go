//go:build tools

// Package tools pins the test-bed binaries (kube-apiserver, etcd) in this
// module's go.mod so `go build` can build them reproducibly.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
)
