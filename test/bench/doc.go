// Package bench holds in-process benchmarks and their correctness checks
// that measure meshca end to end against the project's performance targets.
// They build the real components — an issuer wired as `meshca issuer serve`
// wires it (local root, SQLite store, dev attestor, admin Unix socket),
// agents as `meshca agent` builds them, and Envoy SDS clients
// (agent/sdstest) — in one process on loopback and Unix sockets. It has no
// non-test code.
//
// BenchmarkRevokeToSDS measures the revocation target "time from `meshca admin
// revoke` to the CRL on 100 agents' SDS streams, p99 ≤ 2 s". Run it with a
// bounded number of revocations, as `make bench` does:
//
//	go test -run '^$' -bench BenchmarkRevokeToSDS -benchtime 20x ./test/bench/
//
// TestRevokeReachesSDSStreams, a smaller correctness check of the same path,
// runs with the unit tests.
package bench
