package upstream

import (
	"context"

	"github.com/smallstep/certificates/cas/apiv1"
	"github.com/smallstep/certificates/cas/cloudcas"
)

// newCloudCAS maps c onto smallstep's cloudcas options. cloudcas issues
// from the certificate template (the CSR is not sent): the public key and
// the CA constraints of Issue's template.
func newCloudCAS(ctx context.Context, c CloudCAS) (Service, error) {
	return cloudcas.New(ctx, apiv1.Options{
		Type:                 apiv1.CloudCAS,
		CertificateAuthority: c.CertificateAuthority,
		CredentialsFile:      c.CredentialsFile,
	})
}
