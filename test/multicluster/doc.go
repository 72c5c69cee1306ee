// Package multicluster tests meshca across clusters and meshes with real
// processes: `meshca root serve` (keys in a real Vault dev server), issuers
// of two clusters ("east" and "west") enrolled with join tokens, and one
// `meshca agent` per workload, whose SPIFFE Workload API go-spiffe reads.
// The tests run mutual TLS between workloads while intermediates and roots
// rotate, with Vault stopped, and between two meshes that federate, and
// kill issuer replicas sharing one PostgreSQL database under load.
package multicluster
