// Package federation exchanges trust bundles between meshes the SPIFFE way:
// an Endpoint serves the root's own trust bundle as a SPIFFE bundle (JSON,
// with a sequence number and a refresh hint) and a Fetcher polls other
// meshes' endpoints, keeping the last good bundle of each federated trust
// domain, X.509 and jwt-svid keys alike. The wire format, the HTTP handler
// and the endpoint authentication (profiles https_web and https_spiffe) are
// go-spiffe's; this package adds the serving and polling around them, and
// OIDC discovery of the own domain's JWT-SVID keys for cloud federation.
package federation

import (
	"fmt"
	"log/slog"
)

// Profile is how a bundle endpoint authenticates itself to its clients
// (SPIFFE Trust Domain and Bundle specification, section 5.2).
type Profile string

const (
	// ProfileHTTPSWeb: the endpoint presents a certificate for its host name
	// that clients verify against Web PKI roots.
	ProfileHTTPSWeb Profile = "https_web"
	// ProfileHTTPSSPIFFE: the endpoint presents an X509-SVID that clients
	// verify against the bundle they already hold for its trust domain, and
	// authorize by its SPIFFE ID.
	ProfileHTTPSSPIFFE Profile = "https_spiffe"
)

// Valid reports whether p is one of the defined profiles.
func (p Profile) Valid() bool { return p == ProfileHTTPSWeb || p == ProfileHTTPSSPIFFE }

// spiffeLogger adapts slog to go-spiffe's logger.Logger.
type spiffeLogger struct{ l *slog.Logger }

func (s spiffeLogger) Debugf(format string, args ...any) { s.l.Debug(fmt.Sprintf(format, args...)) }
func (s spiffeLogger) Infof(format string, args ...any)  { s.l.Info(fmt.Sprintf(format, args...)) }
func (s spiffeLogger) Warnf(format string, args ...any)  { s.l.Warn(fmt.Sprintf(format, args...)) }
func (s spiffeLogger) Errorf(format string, args ...any) { s.l.Error(fmt.Sprintf(format, args...)) }
