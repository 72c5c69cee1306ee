// Package ops serves a process's operations endpoints on one listener:
// /metrics (Prometheus), /healthz (the process is alive and serves HTTP)
// and /readyz (every readiness check passes; the body names the first
// that fails). Follow keeps a gRPC health service in step with the same
// checks, so that a load balancer probing gRPC and a kubelet probing HTTP
// see one answer, and turns it to NOT_SERVING while the process drains.
//
// Register is the one way components register a metric that another
// component in the same process (meshca dev runs several) may have
// registered first.
package ops
