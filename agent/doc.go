// Package agent is meshca's workload-side half: it keeps private keys local,
// fetches certificates from an issuer, renews them (package rotation decides
// when) and serves them to Envoy over SDS v3 and to applications over the
// SPIFFE Workload API. Keys it generates never leave the process unless the
// operator asks for files on disk.
package agent
