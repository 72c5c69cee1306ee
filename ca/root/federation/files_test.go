package federation

import (
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestRelationshipFilesValidate(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("b.example")
	id := spiffeid.RequireFromPath(td, "/meshca/bundle-endpoint")
	spiffe := RelationshipFiles{TrustDomain: td, URL: "https://b.example/bundle", Profile: ProfileHTTPSSPIFFE, EndpointSPIFFEID: id, BundleFile: "b.json"}
	web := RelationshipFiles{TrustDomain: td, URL: "https://b.example/bundle", Profile: ProfileHTTPSWeb}
	for _, tc := range []struct {
		name    string
		f       func() RelationshipFiles
		wantErr string
	}{
		{"spiffe", func() RelationshipFiles { return spiffe }, ""},
		{"web", func() RelationshipFiles { return web }, ""},
		{"web with roots", func() RelationshipFiles { f := web; f.CACertFile = "ca.pem"; return f }, ""},
		{"no url", func() RelationshipFiles { f := spiffe; f.URL = ""; return f }, "url is required"},
		{"http url", func() RelationshipFiles { f := spiffe; f.URL = "http://b.example/"; return f }, "want https"},
		{"spiffe without bundle", func() RelationshipFiles { f := spiffe; f.BundleFile = ""; return f }, "needs bundleFile"},
		{"spiffe with web roots", func() RelationshipFiles { f := spiffe; f.CACertFile = "ca.pem"; return f }, "does not use Web PKI roots"},
		{"web with endpoint id", func() RelationshipFiles { f := web; f.EndpointSPIFFEID = id; return f }, "does not use an endpoint SPIFFE ID"},
		{"unknown profile", func() RelationshipFiles { f := web; f.Profile = "spiffe"; return f }, "unknown profile"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.f().Validate()
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}
