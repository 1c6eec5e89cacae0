//go:build tools

// Package tools records the main packages build.sh compiles so that
// `go mod tidy` keeps their dependencies in go.mod and go.sum.
package tools

import (
	// etcd at the version k8s.io/kubernetes itself requires (v3.6.x).
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
