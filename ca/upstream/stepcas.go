package upstream

import (
	"context"
	"strings"

	"github.com/smallstep/certificates/cas/apiv1"
	"github.com/smallstep/certificates/cas/stepcas"
)

// newStepCAS maps s onto smallstep's stepcas options.
func newStepCAS(ctx context.Context, s StepCAS) (Service, error) {
	password, err := readPassword(s.PasswordFile)
	if err != nil {
		return nil, err
	}
	return stepcas.New(ctx, apiv1.Options{
		Type:                            apiv1.StepCAS,
		CertificateAuthority:            s.URL,
		CertificateAuthorityFingerprint: strings.ToLower(s.Fingerprint),
		CertificateIssuer: &apiv1.CertificateIssuer{
			Type: s.ProvisionerType, Provisioner: s.Provisioner,
			Key: s.KeyFile, Certificate: s.CertFile, Password: password,
		},
	})
}
