// Package harness runs meshca as processes for the suites that test the
// binary (test/e2e, test/multicluster, test/kube): the binary built once in
// TestMain (or taken from $MESHCA_BIN), processes stopped with SIGTERM when
// the test ends and checked for logged secrets, waits that give up when the
// process dies, and one-shot commands. What a suite starts (a root, issuers,
// agents) and how it configures them stays in the suite.
package harness
