// Package trust is the relying-party side of meshca, shared by the agent,
// the issuer and the root: sets of root certificates (Bundle), the trust
// bundle the root publishes (TrustBundle, one DomainBundle per trust domain,
// with its wire form and the check of the root's signature over it), CRLs
// and their verification (VerifyCRL), the identity a meshca client requires
// of the server it reached (ServerCheck), and PEM encoding.
//
// It verifies and never signs: signing a trust bundle or a CRL with a CA key
// is package ca's, which imports trust. trust must stay free of the CA's
// certificate templates (step's x509util and its template engine) so that
// the agent, which links trust but not ca, stays small.
package trust
