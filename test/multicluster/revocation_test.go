package multicluster

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshca/meshca/test/harness"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
)

// adminIssuer runs `meshca admin -o json ARGS` against an issuer's socket.
func (is *issuerProc) admin(t *testing.T, out any, args ...string) error {
	t.Helper()
	r := &rootProc{Socket: filepath.Join(is.Dir, "admin.sock")}
	return r.admin(t, out, args...)
}

// certSerials lists the serials of the unexpired certificates of id.
func (is *issuerProc) certSerials(t *testing.T, id string) []string {
	t.Helper()
	var list struct {
		Certificates []struct{ Serial string } `json:"certificates"`
	}
	if err := is.admin(t, &list, "certs", "list", "--spiffe-id", id, "--active"); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, c := range list.Certificates {
		out = append(out, c.Serial)
	}
	return out
}

// checkKeptRevoked checks, after the revocation of id was lifted, that the
// certificates of id in before are revoked by serial, and that id has
// certificates issued since, none revoked.
func (is *issuerProc) checkKeptRevoked(t *testing.T, id string, before []string) {
	t.Helper()
	var list struct {
		Revocations []struct{ Kind, Value string } `json:"revocations"`
	}
	if err := is.admin(t, &list, "revocations"); err != nil {
		t.Fatal(err)
	}
	revoked := map[string]bool{}
	for _, r := range list.Revocations {
		revoked[r.Kind+" "+r.Value] = true
	}
	fresh := 0
	for _, serial := range is.certSerials(t, id) {
		switch {
		case slices.Contains(before, serial) && !revoked["serial "+serial]:
			t.Errorf("certificate %s, issued before the lift, is no longer revoked: %v", serial, list.Revocations)
		case !slices.Contains(before, serial):
			fresh++
			if revoked["serial "+serial] {
				t.Errorf("certificate %s, issued after the lift, is revoked", serial)
			}
		}
	}
	if fresh == 0 {
		t.Errorf("no certificate of %s issued after the lift", id)
	}
}

// TestRevocationEndToEnd: two workloads of east in mutual TLS (each
// checking the CRLs its agent delivers) and a third, bystander workload.
// Revoking the client's serial makes its new handshakes fail within 5 s;
// the bystander is unaffected. Revoking its SPIFFE ID stops its renewals;
// unrevoking lets them through again and keeps the certificates issued
// before revoked.
func TestRevocationEndToEnd(t *testing.T) {
	root := startRoot(t, "intermediateTTL: 1h\n")
	east := startIssuer(t, root, "east", "east.example", "")
	server := startWorkload(t, east, root.BundlePath(), "shop", "backend", 10*time.Minute)
	client := startWorkload(t, east, root.BundlePath(), "shop", "frontend", 10*time.Minute)
	bystander := startWorkload(t, east, root.BundlePath(), "shop", "cart", 10*time.Minute)
	server.watchCRLs(t)

	addr := echoServer(t, server.serverConfig(client.ID))
	byAddr := echoServer(t, server.serverConfig(bystander.ID))
	dial := func(w *workload, l string) func() error {
		return func() error { return exchange(l, w.clientConfig(server.ID)) }
	}
	if err := dial(client, addr)(); err != nil {
		t.Fatalf("mTLS before any revocation: %v", err)
	}

	// Revoke the client's current certificate. Handshakes presenting it
	// fail; its agent, seeing its own serial on the CRL, renews at once, and
	// the client is back with a new certificate.
	revoked, err := client.Source.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	serial := serialOf(t, client)
	dialRevoked := func() error {
		return exchange(addr, tlsconfig.MTLSClientConfig(revoked, client.Source, tlsconfig.AuthorizeID(server.ID)))
	}
	revokedAt := time.Now()
	if err := east.admin(t, nil, "revoke", "--serial", serial, "--reason", "key compromise"); err != nil {
		t.Fatal(err)
	}
	failingSince := waitFailing(t, "handshakes with the revoked certificate", 10*time.Second, dialRevoked)
	if d := failingSince.Sub(revokedAt); d > 5*time.Second {
		t.Errorf("the revoked certificate was refused %v after the command, want within 5s", d)
	} else {
		t.Logf("revoked certificate refused %v after `meshca admin revoke`", d.Round(time.Millisecond))
	}
	for i := 0; i < 20; i++ {
		if err := dial(bystander, byAddr)(); err != nil {
			t.Fatalf("the bystander was affected: %v", err)
		}
	}
	client.WaitFor(t, "the client's agent to replace its revoked certificate", 10*time.Second, func() bool {
		return serialOf(t, client) != serial && dial(client, addr)() == nil
	})

	// Revoke the identity: a new certificate for it is refused. The one
	// fetched before is revoked with it.
	token := harness.WriteFile(t, filepath.Join(t.TempDir(), "token"), mustRun(t, "dev", "token", "--data-dir", east.Dir, "--namespace", "shop", "--service-account", "frontend"))
	fetch := func() (string, error) {
		return run(t, "cert", "fetch", "--issuer", east.Addr, "--server-name", "localhost", "--ca-bundle", root.BundlePath(),
			"--token-file", token, "--out", t.TempDir())
	}
	if _, err := fetch(); err != nil {
		t.Fatalf("certificate before the identity is revoked: %v", err)
	}
	if err := east.admin(t, nil, "revoke", "--spiffe-id", client.ID.String()); err != nil {
		t.Fatal(err)
	}
	if _, err := fetch(); err == nil || !strings.Contains(err.Error(), "PermissionDenied") || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("certificate for a revoked identity: %v, want PermissionDenied naming the revocation", err)
	}
	var list struct {
		Revocations []struct {
			Kind, Value string
		} `json:"revocations"`
	}
	if err := east.admin(t, &list, "revocations"); err != nil || len(list.Revocations) != 2 {
		t.Fatalf("revocations: %+v %v, want 2", list, err)
	}

	// Unrevoke: renewals work again, and the certificates issued before
	// the lift stay revoked (by serial) until they expire.
	before := east.certSerials(t, client.ID.String())
	if len(before) < 2 {
		t.Fatalf("certificates of the client before the lift: %v, want the agent's and the fetched one", before)
	}
	if err := east.admin(t, nil, "unrevoke", "--spiffe-id", client.ID.String()); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "a certificate after unrevoke", 10*time.Second, func() bool { _, err := fetch(); return err == nil })
	east.checkKeptRevoked(t, client.ID.String(), before)

	// Every change is in the audit log, with its actor.
	var audit struct {
		Events []struct {
			Action, Actor string
		} `json:"events"`
	}
	if err := east.admin(t, &audit, "audit", "list", "--since", "10m"); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range audit.Events {
		if strings.HasPrefix(e.Action, "revocation.") {
			n++
			if !strings.HasPrefix(e.Actor, "admin:") {
				t.Errorf("audit event %s has actor %q, want the Unix user", e.Action, e.Actor)
			}
		}
	}
	if n != 3 {
		t.Errorf("%d revocation audit events, want 3 (2 revokes, 1 unrevoke)", n)
	}
	if err := east.admin(t, nil, "audit", "verify"); err != nil {
		t.Errorf("audit verify: %v", err)
	}
}

// TestRevokeCluster: revoking west at the root puts west's intermediate on
// the root's CRL (delivered to east's workloads, which then refuse west's),
// and west's issuer can no longer renew.
func TestRevokeCluster(t *testing.T) {
	root := startRoot(t, "intermediateTTL: 1h\n")
	east := startIssuer(t, root, "east", "east.example", "")
	west := startIssuer(t, root, "west", "west.example", "")
	server := startWorkload(t, east, root.BundlePath(), "shop", "backend", 10*time.Minute)
	client := startWorkload(t, west, root.BundlePath(), "shop", "frontend", 10*time.Minute)
	server.watchCRLs(t)
	addr := echoServer(t, server.serverConfig(client.ID))
	dial := func() error { return exchange(addr, client.clientConfig(server.ID)) }
	if err := dial(); err != nil {
		t.Fatalf("east/west mTLS before revocation: %v", err)
	}
	westInter := intermediateOf(t, client)

	if err := root.admin(t, nil, "revoke", "--cluster", "west", "--reason", "decommissioned"); err != nil {
		t.Fatal(err)
	}
	waitFailing(t, "west's workload after revoking west", 10*time.Second, dial)
	svid, _ := client.Source.GetX509SVID()
	if !server.CRLs.lists(svid.Certificates[1].SerialNumber.Text(16)) {
		t.Errorf("west's intermediate %s is not on the CRLs east's agent delivers", westInter)
	}
	// west's issuer is refused: a restart cannot renew its intermediate.
	west.Stop(t)
	west.Proc = start(t, "issuer west (revoked)", "issuer", "serve", "--config", west.config)
	select {
	case <-west.Done():
	case <-time.After(harness.StartTimeout):
		t.Fatal("the revoked cluster's issuer keeps running without an intermediate")
	}
	if west.Err() == nil || !strings.Contains(west.Output(), "cluster west is revoked") {
		t.Errorf("the revoked cluster's issuer: exit %v, want a failure saying the cluster is revoked:\n%s", west.Err(), west.Output())
	}
}
