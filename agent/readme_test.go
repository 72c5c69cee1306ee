package agent

import (
	"os"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	// Types the bootstrap's typed_config fields name.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
)

// TestREADMEEnvoyBootstrap keeps the README's Envoy bootstrap honest: it
// must decode as an Envoy v3 Bootstrap (unknown fields are errors), pass the
// protos' validation rules, and point Envoy's default and ROOTCA secrets at
// the agent's socket over HTTP/2.
func TestREADMEEnvoyBootstrap(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(readme), "<!-- envoy-bootstrap:")
	if !ok {
		t.Fatal("README.md has no envoy-bootstrap block")
	}
	_, after, _ = strings.Cut(after, "```yaml\n")
	block, _, ok := strings.Cut(after, "```")
	if !ok {
		t.Fatal("envoy-bootstrap block is not closed")
	}
	js, err := yaml.YAMLToJSON([]byte(block))
	if err != nil {
		t.Fatal(err)
	}
	var bs bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(js, &bs); err != nil {
		t.Fatalf("not an Envoy v3 bootstrap: %v", err)
	}
	if err := bs.ValidateAll(); err != nil {
		t.Fatalf("bootstrap fails validation: %v", err)
	}

	cluster := bs.GetStaticResources().GetClusters()[0]
	pipe := cluster.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetPipe()
	if cluster.GetName() != "sds-grpc" || pipe.GetPath() == "" {
		t.Errorf("cluster %q, pipe %q: want sds-grpc over a Unix socket", cluster.GetName(), pipe.GetPath())
	}
	if _, ok := cluster.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]; !ok {
		t.Error("sds-grpc has no HTTP/2 protocol options; gRPC needs HTTP/2")
	}
	var tls tlsv3.DownstreamTlsContext
	if err := bs.GetStaticResources().GetListeners()[0].GetFilterChains()[0].GetTransportSocket().GetTypedConfig().UnmarshalTo(&tls); err != nil {
		t.Fatal(err)
	}
	ctx := tls.GetCommonTlsContext()
	cert, roots := ctx.GetTlsCertificateSdsSecretConfigs()[0], ctx.GetValidationContextSdsSecretConfig()
	if cert.GetName() != ResourceDefault || roots.GetName() != ResourceRootCA {
		t.Errorf("secrets %q and %q, want %q and %q", cert.GetName(), roots.GetName(), ResourceDefault, ResourceRootCA)
	}
	for _, c := range []*corev3.ConfigSource{cert.GetSdsConfig(), roots.GetSdsConfig()} {
		src := c.GetApiConfigSource()
		if src.GetApiType() != corev3.ApiConfigSource_GRPC || src.GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName() != "sds-grpc" {
			t.Errorf("sds_config %v: want GRPC through sds-grpc", c)
		}
	}
}
