// Command peers measures meshca side by side with step-ca and SPIRE server
// on one machine in one run: the same P-256 CSR set, the same number of
// concurrent clients each on its own persistent connection, a warm-up, then
// rounds that alternate between the systems. Per system it reports
// certificates per second, the server's CPU time per certificate (utime +
// stime from /proc/PID/stat over each round; the steady figure on a shared
// machine) and client-observed p50/p99 latency.
//
// Every system runs as its own process in a temporary directory:
//
//   - meshca-sqlite: `meshca dev` (SQLite), a token per client reused for
//     every request (as an agent does; attestation results are cached);
//   - meshca-fresh: the same server, a newly minted token on every request
//     (no attestation cache hit, as step-ca's one-time tokens);
//   - meshca-pg: `meshca dev --store-dsn` on a new PostgreSQL database; the
//     CPU of the PostgreSQL backends serving it is counted with the server;
//   - step-ca: `POST /1.0/sign` with a JWK-provisioner one-time token per
//     request, its default embedded database (Badger);
//   - spire: SVID API MintX509SVID over the server's local admin socket,
//     SQLite datastore.
//
// The binaries come from flags or environment variables (MESHCA_BIN,
// PEERS_STEPCA_BIN, PEERS_SPIRE_BIN); `make bench-peers` builds and caches
// them. It is its own module so that the peers' client libraries stay out
// of meshca's module graph; it never imports github.com/meshca/meshca.
package main
