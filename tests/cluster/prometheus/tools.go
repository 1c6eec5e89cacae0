//go:build tools

// Package tools records the main packages build.sh compiles from this module
// so that `go mod tidy` keeps them in go.mod and go.sum.
package tools

import (
	_ "github.com/prometheus-operator/prometheus-operator/cmd/operator"
	_ "github.com/prometheus-operator/prometheus-operator/cmd/prometheus-config-reloader"
	_ "github.com/prometheus/prometheus/cmd/prometheus"
)
