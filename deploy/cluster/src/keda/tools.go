//go:build tools

// Package tools pins KEDA's two commands, so that `go mod tidy` keeps their dependencies in
// go.sum. The third, cmd/webhooks (the admission webhooks that reject a second ScaledObject
// for one Deployment early), is optional and not built: the operator reports the same
// conflicts as status conditions and events.
package tools

import (
	_ "github.com/kedacore/keda/v2/cmd/adapter"
	_ "github.com/kedacore/keda/v2/cmd/operator"
)
