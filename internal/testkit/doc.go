// Package testkit holds what tests across the module share, each written
// once: CA trees built in one line (keys generated once per process and
// reused, so tests stay fast) and single certificates, intermediates and
// upstream-PKI CAs likewise, a log buffer safe for concurrent writers,
// Eventually for conditions reached on real time, free ports and listeners,
// the meshca binary for process tests, go commands in the build
// configuration `make` uses (GoCommand), Go for a server or loop that runs
// in the background until the test ends, and what workloads send and relying
// parties check: key-only CSRs, JWT-SVIDs and the JWT bundles to validate
// them against.
package testkit
