// Package interop holds interoperability tests that drive the meshca binary
// with third-party clients we did not write. It is its own Go module so that
// heavy client dependencies (istio.io/istio) stay out of the main module; it
// never imports github.com/meshca/meshca and talks to meshca only as a process.
package interop
