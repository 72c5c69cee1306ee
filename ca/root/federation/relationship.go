package federation

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Relationship is one federated trust domain and the endpoint that serves
// its bundle.
type Relationship struct {
	// TrustDomain is the federated trust domain. Required; at most one
	// relationship per trust domain.
	TrustDomain spiffeid.TrustDomain
	// URL of the bundle endpoint; must be https. Required.
	URL string
	// Profile is how the endpoint authenticates. Required.
	Profile Profile
	// EndpointSPIFFEID is the SPIFFE ID the endpoint must present
	// (https_spiffe only). It must be in TrustDomain: the endpoint is
	// verified with the bundle of TrustDomain held so far.
	EndpointSPIFFEID spiffeid.ID
	// InitialBundle is TrustDomain's bundle obtained out of band (the file
	// form is SPIFFE bundle JSON: spiffebundle.Load). It is served as the
	// federated bundle until the first fetch succeeds and authenticates
	// that fetch. Required for https_spiffe, optional for https_web.
	InitialBundle *spiffebundle.Bundle
	// WebRoots verify an https_web endpoint; nil means the system roots.
	WebRoots *x509.CertPool
}

// validate reports the first problem with r.
func (r *Relationship) validate() error {
	if err := checkNames(r.TrustDomain, r.URL, r.Profile, r.EndpointSPIFFEID); err != nil {
		return err
	}
	if b := r.InitialBundle; b != nil {
		if b.TrustDomain() != r.TrustDomain {
			return fmt.Errorf("initial bundle is for trust domain %q", b.TrustDomain())
		}
		if len(b.X509Authorities()) == 0 {
			return errors.New("initial bundle has no X.509 authorities")
		}
	}
	if r.Profile == ProfileHTTPSSPIFFE {
		switch {
		case r.InitialBundle == nil:
			return errors.New("https_spiffe needs an initial bundle to authenticate the endpoint with")
		case r.WebRoots != nil:
			return errors.New("https_spiffe does not use Web PKI roots")
		}
	}
	return nil
}

// checkNames reports the first problem with what names a relationship,
// files or none: its trust domain, URL, profile and endpoint SPIFFE ID.
func checkNames(td spiffeid.TrustDomain, rawURL string, p Profile, endpointID spiffeid.ID) error {
	if td.IsZero() {
		return errors.New("trust domain is required")
	}
	if rawURL == "" {
		return errors.New("url is required: want https://host[:port]/path")
	}
	u, err := url.Parse(rawURL)
	switch {
	case err != nil:
		return fmt.Errorf("url: %w", err)
	case u.Scheme != "https" || u.Host == "":
		return fmt.Errorf("url %q: want https://host[:port]/path", rawURL)
	}
	switch p {
	case ProfileHTTPSSPIFFE:
		switch {
		case endpointID.IsZero():
			return errors.New("https_spiffe needs the endpoint SPIFFE ID")
		case endpointID.TrustDomain() != td:
			return fmt.Errorf("endpoint SPIFFE ID %q is not in trust domain %q", endpointID, td)
		}
	case ProfileHTTPSWeb:
		if !endpointID.IsZero() {
			return errors.New("https_web does not use an endpoint SPIFFE ID")
		}
	default:
		return fmt.Errorf("unknown profile %q", p)
	}
	return nil
}

// refreshDelay is how long to wait before the next fetch of a relationship:
// the remote refresh hint when there is one (a zero hint lets the client
// choose), else the configured interval, clamped to [min, max]. After
// failures the delay is the minimum doubled per consecutive failure, never
// longer than the regular delay, so an endpoint that comes back is noticed
// quickly and one that stays down is not hammered.
func refreshDelay(cfg *FetcherConfig, hint time.Duration, failures int) time.Duration {
	d := cfg.RefreshInterval
	if hint > 0 {
		d = hint
	}
	d = min(max(d, cfg.MinRefreshInterval), cfg.MaxRefreshInterval)
	if failures > 0 {
		backoff := cfg.MinRefreshInterval << min(failures-1, 20)
		if backoff > 0 && backoff < d {
			d = backoff
		}
	}
	return d
}
