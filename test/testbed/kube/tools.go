//go:build tools

// Package tools pins the test-bed binaries (etcd and the Kubernetes control
// plane and node: kube-apiserver, kube-controller-manager, kube-scheduler,
// kubelet) in this module's go.mod so `go build` can build them reproducibly.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
