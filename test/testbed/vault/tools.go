//go:build tools

// Package tools pins the test-bed Vault server in this module's go.mod so
// `go build` can build it reproducibly.
package tools

import (
	_ "github.com/hashicorp/vault"
)
