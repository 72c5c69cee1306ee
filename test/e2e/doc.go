// Package e2e holds end-to-end tests that run the meshca binary as real
// processes (meshca dev, meshca dev token, meshca cert fetch) on 127.0.0.1
// and check what they produce with Debian's openssl, the way a newcomer
// following the quick start would. It has no non-test code; the tests talk to
// meshca only through its command line, files and logs.
//
// Run with `go test ./test/e2e/...`. The binary is built once per run, or
// taken from $MESHCA_BIN. openssl is required: without it the tests skip,
// or fail when CI=true. The observability tests also run `meshca root
// serve`, `meshca issuer serve` and the meshca-agent binary
// ($MESHCA_AGENT_BIN), and Prometheus from the test bed (test/promtest),
// under the same rule.
package e2e
