//go:build tools

// Package tools pins local-path-provisioner's command, so that `go mod tidy` keeps its
// dependencies in go.sum.
package tools

import _ "github.com/rancher/local-path-provisioner"
