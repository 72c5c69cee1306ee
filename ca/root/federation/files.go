package federation

import (
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.step.sm/crypto/pemutil"
)

// RelationshipFiles is a Relationship whose initial bundle and web roots
// are files, as a configuration names them.
type RelationshipFiles struct {
	// TrustDomain, URL, Profile and EndpointSPIFFEID: see Relationship.
	TrustDomain      spiffeid.TrustDomain
	URL              string
	Profile          Profile
	EndpointSPIFFEID spiffeid.ID
	// BundleFile is the remote's initial SPIFFE bundle (JSON); read for
	// ProfileHTTPSSPIFFE only.
	BundleFile string
	// CACertFile verifies an https_web endpoint (PEM); empty means the
	// system roots.
	CACertFile string
}

// Validate reports the first problem with f that can be seen without
// reading its files; the rules are those of FetcherConfig.Validate. It does
// not change f.
func (f RelationshipFiles) Validate() error {
	if err := checkNames(f.TrustDomain, f.URL, f.Profile, f.EndpointSPIFFEID); err != nil {
		return err
	}
	if f.Profile == ProfileHTTPSSPIFFE {
		switch {
		case f.BundleFile == "":
			return errors.New("https_spiffe needs bundleFile (the remote's SPIFFE bundle)")
		case f.CACertFile != "":
			return errors.New("https_spiffe does not use Web PKI roots (caCertFile)")
		}
	}
	return nil
}

// Load reads the files of f into a Relationship.
func (f RelationshipFiles) Load() (Relationship, error) {
	td := f.TrustDomain
	rel := Relationship{TrustDomain: td, URL: f.URL, Profile: f.Profile}
	if f.Profile == ProfileHTTPSSPIFFE {
		rel.EndpointSPIFFEID = f.EndpointSPIFFEID
		var err error
		if rel.InitialBundle, err = spiffebundle.Load(td, f.BundleFile); err != nil {
			return Relationship{}, fmt.Errorf("federation %s: bundleFile: %w", td.Name(), err)
		}
	}
	if f.CACertFile != "" {
		certs, err := pemutil.ReadCertificateBundle(f.CACertFile)
		if err != nil {
			return Relationship{}, fmt.Errorf("federation %s: caCertFile: %w", td.Name(), err)
		}
		rel.WebRoots = x509.NewCertPool()
		for _, c := range certs {
			rel.WebRoots.AddCert(c)
		}
	}
	return rel, nil
}
