package adminapi_test

import (
	"context"
	"database/sql"
	"encoding/hex"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/internal/adminapi"
	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/sqlite"
)

var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

const (
	idA = "spiffe://east.example/ns/a/sa/x"
	idB = "spiffe://east.example/ns/b/sa/y"
	idC = "spiffe://west.example/ns/c/sa/z"
)

// seedCerts are recorded by openReads, in this order (seq 1 to 4); each
// one's audit event is at its NotBefore.
var seedCerts = []store.Certificate{
	{Serial: "a1", SPIFFEID: idA, Cluster: "east", NotBefore: t0.Add(-2 * time.Hour), NotAfter: t0.Add(-time.Hour), Fingerprint: "f1", PodUID: "pod-1"},
	{Serial: "a2", SPIFFEID: idA, Cluster: "east", NotBefore: t0.Add(-30 * time.Minute), NotAfter: t0.Add(30 * time.Minute), Fingerprint: "f2", PodUID: "pod-2"},
	{Serial: "b1", SPIFFEID: idB, Cluster: "east", NotBefore: t0.Add(-20 * time.Minute), NotAfter: t0.Add(40 * time.Minute), Fingerprint: "f3"},
	{Serial: "c1", SPIFFEID: idC, Cluster: "west", NotBefore: t0.Add(-10 * time.Minute), NotAfter: t0.Add(50 * time.Minute), Fingerprint: "f4"},
}

// openReads opens a SQLite store at a temporary path on the clock t0,
// records seedCerts and returns Reads over it.
func openReads(t *testing.T) (*adminapi.Reads, *sqlite.Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "meshca.db")
	now := func() time.Time { return t0 }
	st, err := sqlite.Open(t.Context(), sqlite.Config{Path: path, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	for _, c := range seedCerts {
		ev := store.AuditEvent{Time: c.NotBefore, Actor: "system:serviceaccount:" + c.Serial, Action: "certificate.issue",
			Cluster: c.Cluster, SPIFFEID: c.SPIFFEID, Serial: c.Serial}
		if err := st.RecordIssuance(t.Context(), c, ev); err != nil {
			t.Fatal(err)
		}
	}
	return adminapi.NewReads(st, now, slog.New(slog.DiscardHandler)), st, path
}

func wantCode(t *testing.T, err error, want codes.Code) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Fatalf("error %v: code %v, want %v", err, got, want)
	}
}

func serials(certs []*meshcav1.Certificate) string {
	var out []string
	for _, c := range certs {
		out = append(out, c.GetSerial())
	}
	return strings.Join(out, " ")
}

func TestListCertificates(t *testing.T) {
	r, _, _ := openReads(t)
	for _, tc := range []struct {
		name string
		req  *meshcav1.ListCertificatesRequest
		want string
	}{
		{"all, newest first", &meshcav1.ListCertificatesRequest{}, "c1 b1 a2 a1"},
		{"spiffe id", &meshcav1.ListCertificatesRequest{SpiffeId: idA}, "a2 a1"},
		{"cluster", &meshcav1.ListCertificatesRequest{Cluster: "east"}, "b1 a2 a1"},
		{"active", &meshcav1.ListCertificatesRequest{Active: true}, "c1 b1 a2"},
		{"all filters", &meshcav1.ListCertificatesRequest{SpiffeId: idA, Cluster: "east", Active: true}, "a2"},
		{"no match", &meshcav1.ListCertificatesRequest{SpiffeId: idA, Cluster: "west"}, ""},
		{"limit", &meshcav1.ListCertificatesRequest{Limit: 2}, "c1 b1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := r.ListCertificates(t.Context(), tc.req)
			if err != nil {
				t.Fatal(err)
			}
			if got := serials(resp.GetCertificates()); got != tc.want {
				t.Fatalf("serials %q, want %q", got, tc.want)
			}
		})
	}

	resp, err := r.ListCertificates(t.Context(), &meshcav1.ListCertificatesRequest{SpiffeId: idA, Active: true})
	if err != nil {
		t.Fatal(err)
	}
	got := resp.GetCertificates()[0]
	if got.GetSpiffeId() != idA || got.GetCluster() != "east" || got.GetSha256() != "f2" || got.GetPodUid() != "pod-2" ||
		!got.GetNotBefore().AsTime().Equal(seedCerts[1].NotBefore) || !got.GetNotAfter().AsTime().Equal(seedCerts[1].NotAfter) {
		t.Fatalf("certificate %v, want the record of a2", got)
	}

	for _, tc := range []struct {
		name string
		req  *meshcav1.ListCertificatesRequest
	}{
		{"negative limit", &meshcav1.ListCertificatesRequest{Limit: -1}},
		{"limit over the maximum", &meshcav1.ListCertificatesRequest{Limit: adminapi.MaxListLimit + 1}},
		{"bad spiffe id", &meshcav1.ListCertificatesRequest{SpiffeId: "east.example/ns/a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := r.ListCertificates(t.Context(), tc.req)
			wantCode(t, err, codes.InvalidArgument)
		})
	}
}

// filterStore records the filter it is asked for.
type filterStore struct {
	got    []store.CertificateFilter
	events []store.AuditEvent
}

var _ adminapi.ReadStore = (*filterStore)(nil)

func (f *filterStore) Certificate(context.Context, string) (store.Certificate, error) {
	return store.Certificate{Serial: "a1", Cluster: "east"}, nil
}

func (f *filterStore) Certificates(_ context.Context, filter store.CertificateFilter) ([]store.Certificate, error) {
	f.got = append(f.got, filter)
	return nil, nil
}

func (f *filterStore) AuditEvents(context.Context, time.Time) ([]store.AuditEvent, error) {
	return f.events, nil
}

func TestListLimits(t *testing.T) {
	fs := &filterStore{}
	for i := range adminapi.MaxListLimit + 5 {
		fs.events = append(fs.events, store.AuditEvent{Seq: int64(i + 1)})
	}
	r := adminapi.NewReads(fs, func() time.Time { return t0 }, slog.New(slog.DiscardHandler))
	for _, limit := range []int32{0, 1, adminapi.MaxListLimit} {
		if _, err := r.ListCertificates(t.Context(), &meshcav1.ListCertificatesRequest{Limit: limit, Active: true}); err != nil {
			t.Fatal(err)
		}
	}
	want := []store.CertificateFilter{
		{ActiveAt: t0, Limit: adminapi.DefaultListLimit}, {ActiveAt: t0, Limit: 1}, {ActiveAt: t0, Limit: adminapi.MaxListLimit},
	}
	if !slices.Equal(fs.got, want) {
		t.Fatalf("filters %+v, want %+v", fs.got, want)
	}
	for _, tc := range []struct {
		limit int32
		want  int
	}{{0, adminapi.DefaultListLimit}, {3, 3}, {adminapi.MaxListLimit, adminapi.MaxListLimit}} {
		resp, err := r.ListAuditEvents(t.Context(), &meshcav1.ListAuditEventsRequest{Limit: tc.limit})
		if err != nil {
			t.Fatal(err)
		}
		if ev := resp.GetEvents(); len(ev) != tc.want || ev[0].GetSeq() != 1 || ev[len(ev)-1].GetSeq() != int64(tc.want) {
			t.Fatalf("limit %d: %d events, want the first %d", tc.limit, len(ev), tc.want)
		}
	}
	_, err := r.ListAuditEvents(t.Context(), &meshcav1.ListAuditEventsRequest{Limit: adminapi.MaxListLimit + 1})
	wantCode(t, err, codes.InvalidArgument)

	// A store without revocations or chain verification: GetCertificate
	// works without revoked, and the calls that need them are Unimplemented.
	got, err := r.GetCertificate(t.Context(), &meshcav1.GetCertificateRequest{Serial: "a1"})
	if err != nil || got.GetCertificate().GetSerial() != "a1" || got.GetRevoked() != nil {
		t.Fatalf("GetCertificate = %v, %v", got, err)
	}
	_, err = r.ListRevocations(t.Context(), &meshcav1.ListRevocationsRequest{})
	wantCode(t, err, codes.Unimplemented)
	_, err = r.VerifyAudit(t.Context(), &meshcav1.VerifyAuditRequest{})
	wantCode(t, err, codes.Unimplemented)
	_, err = r.AddCluster(t.Context(), &meshcav1.AddClusterRequest{})
	wantCode(t, err, codes.Unimplemented)
}

func revoke(t *testing.T, st *sqlite.Store, rev store.Revocation) {
	t.Helper()
	rev.RevokedBy = "admin:test"
	ev := store.AuditEvent{Actor: rev.RevokedBy, Action: "revocation.add", Detail: rev.Kind + " " + rev.Value}
	if _, err := st.Revoke(t.Context(), rev, ev); err != nil {
		t.Fatal(err)
	}
}

func TestGetCertificate(t *testing.T) {
	r, st, _ := openReads(t)
	get := func(serial string) *meshcav1.GetCertificateResponse {
		t.Helper()
		resp, err := r.GetCertificate(t.Context(), &meshcav1.GetCertificateRequest{Serial: serial})
		if err != nil {
			t.Fatalf("GetCertificate(%q): %v", serial, err)
		}
		return resp
	}
	resp := get("a2")
	if c := resp.GetCertificate(); c.GetSerial() != "a2" || c.GetSpiffeId() != idA || c.GetPodUid() != "pod-2" ||
		!c.GetNotAfter().AsTime().Equal(seedCerts[1].NotAfter) || resp.GetRevoked() != nil {
		t.Fatalf("GetCertificate(a2) = %v", resp)
	}
	for _, serial := range []string{"A2", "0xa2", "00:A2", "0X00a2"} {
		if got := get(serial).GetCertificate().GetSerial(); got != "a2" {
			t.Fatalf("GetCertificate(%q) found %q, want a2", serial, got)
		}
	}
	for _, tc := range []struct {
		serial string
		want   codes.Code
	}{
		{"", codes.InvalidArgument},
		{"zz", codes.InvalidArgument},
		{"-a2", codes.InvalidArgument},
		{"0", codes.InvalidArgument},
		{"0x", codes.InvalidArgument},
		{strings.Repeat("f", 41), codes.InvalidArgument},
		{"ffff", codes.NotFound},
	} {
		_, err := r.GetCertificate(t.Context(), &meshcav1.GetCertificateRequest{Serial: tc.serial})
		if status.Code(err) != tc.want {
			t.Fatalf("GetCertificate(%q): %v, want %v", tc.serial, err, tc.want)
		}
	}

	// Covered by its SPIFFE ID, then (preferred) by its own serial.
	revoke(t, st, store.Revocation{Kind: store.RevokeSPIFFEID, Value: idA, Cluster: "east", Reason: "compromised"})
	if rev := get("a2").GetRevoked(); rev.GetKind() != store.RevokeSPIFFEID || rev.GetValue() != idA ||
		rev.GetReason() != "compromised" || rev.GetRevokedBy() != "admin:test" || !rev.GetRevokedAt().AsTime().Equal(t0) ||
		rev.GetExpiresAt() != nil {
		t.Fatalf("a2 revoked = %v, want its SPIFFE ID's revocation", rev)
	}
	revoke(t, st, store.Revocation{Kind: store.RevokeSerial, Value: "a2", Cluster: "east", ExpiresAt: seedCerts[1].NotAfter})
	if rev := get("a2").GetRevoked(); rev.GetKind() != store.RevokeSerial || !rev.GetExpiresAt().AsTime().Equal(seedCerts[1].NotAfter) {
		t.Fatalf("a2 revoked = %v, want its serial's revocation", rev)
	}
	// Not covered: a revocation no longer in force, one of another
	// cluster, one of another serial.
	revoke(t, st, store.Revocation{Kind: store.RevokeSerial, Value: "b1", Cluster: "east", ExpiresAt: t0.Add(-time.Second)})
	revoke(t, st, store.Revocation{Kind: store.RevokeSPIFFEID, Value: idB, Cluster: "west"})
	revoke(t, st, store.Revocation{Kind: store.RevokeSerial, Value: "c1", Cluster: "west", ExpiresAt: seedCerts[3].NotAfter})
	if rev := get("b1").GetRevoked(); rev != nil {
		t.Fatalf("b1 revoked = %v, want none", rev)
	}
	// A whole cluster.
	revoke(t, st, store.Revocation{Kind: store.RevokeCluster, Value: "east"})
	if rev := get("b1").GetRevoked(); rev.GetKind() != store.RevokeCluster || rev.GetValue() != "east" {
		t.Fatalf("b1 revoked = %v, want its cluster's revocation", rev)
	}

	list, err := r.ListRevocations(t.Context(), &meshcav1.ListRevocationsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, rev := range list.GetRevocations() {
		got = append(got, rev.GetKind()+":"+rev.GetValue())
	}
	// The expired serial revocation of b1 is not in force.
	want := "spiffe_id:" + idA + " serial:a2 spiffe_id:" + idB + " serial:c1 cluster:east"
	if strings.Join(got, " ") != want {
		t.Fatalf("revocations %q, want %q", strings.Join(got, " "), want)
	}
}

func TestListAuditEvents(t *testing.T) {
	r, st, _ := openReads(t)
	if err := st.AppendAudit(t.Context(), store.AuditEvent{Actor: "admin:alice", Action: "bundle.publish", Detail: "d"}); err != nil {
		t.Fatal(err)
	}
	list := func(req *meshcav1.ListAuditEventsRequest) []*meshcav1.AuditEvent {
		t.Helper()
		resp, err := r.ListAuditEvents(t.Context(), req)
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetEvents()
	}
	seqs := func(events []*meshcav1.AuditEvent) []int64 {
		var out []int64
		for _, ev := range events {
			out = append(out, ev.GetSeq())
		}
		return out
	}
	// The default window is the last hour: a1's event (t0-2h) is older.
	if got := seqs(list(&meshcav1.ListAuditEventsRequest{})); !slices.Equal(got, []int64{2, 3, 4, 5}) {
		t.Fatalf("default window: seqs %v, want 2..5", got)
	}
	if got := seqs(list(&meshcav1.ListAuditEventsRequest{Since: timestamppb.New(t0.Add(-3 * time.Hour)), Limit: 2})); !slices.Equal(got, []int64{1, 2}) {
		t.Fatalf("since t0-3h, limit 2: seqs %v, want 1 2", got)
	}
	if got := seqs(list(&meshcav1.ListAuditEventsRequest{Since: timestamppb.New(t0.Add(-15 * time.Minute))})); !slices.Equal(got, []int64{4, 5}) {
		t.Fatalf("since t0-15m: seqs %v, want 4 5", got)
	}
	if got := list(&meshcav1.ListAuditEventsRequest{Since: timestamppb.New(t0.Add(time.Hour))}); len(got) != 0 {
		t.Fatalf("since the future: %v", got)
	}
	events := list(&meshcav1.ListAuditEventsRequest{Since: timestamppb.New(t0.Add(-time.Minute))})
	if len(events) != 1 {
		t.Fatalf("events %v, want the one appended at t0", events)
	}
	if ev := events[0]; ev.GetActor() != "admin:alice" || ev.GetAction() != "bundle.publish" || ev.GetDetail() != "d" ||
		!ev.GetTime().AsTime().Equal(t0) || len(ev.GetHashHex()) != 64 {
		t.Fatalf("event %v", ev)
	}
	if ev := list(&meshcav1.ListAuditEventsRequest{Since: timestamppb.New(t0.Add(-25 * time.Minute)), Limit: 1})[0]; ev.GetSerial() != "b1" ||
		ev.GetSpiffeId() != idB || ev.GetCluster() != "east" || ev.GetActor() != "system:serviceaccount:b1" {
		t.Fatalf("event %v, want b1's issuance", ev)
	}
	_, err := r.ListAuditEvents(t.Context(), &meshcav1.ListAuditEventsRequest{Since: &timestamppb.Timestamp{Seconds: 1 << 62}})
	wantCode(t, err, codes.InvalidArgument)
	_, err = r.ListAuditEvents(t.Context(), &meshcav1.ListAuditEventsRequest{Limit: -1})
	wantCode(t, err, codes.InvalidArgument)
}

func TestVerifyAudit(t *testing.T) {
	r, st, path := openReads(t)
	resp, err := r.VerifyAudit(t.Context(), &meshcav1.VerifyAuditRequest{})
	if err != nil || !resp.GetOk() || resp.GetProblem() != "" {
		t.Fatalf("VerifyAudit of an intact chain = %v, %v", resp, err)
	}
	head, err := st.AuditHead(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if n := int64(len(seedCerts)); head.Seq != n || resp.GetEvents() != n || resp.GetHeadSeq() != n ||
		resp.GetHeadHash() != hex.EncodeToString(head.Hash) {
		t.Fatalf("VerifyAudit of an intact chain = %v, want %d events, head seq %d hash %x", resp, n, head.Seq, head.Hash)
	}

	// Someone with the file drops the guard rails and edits an event.
	db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, q := range []string{
		`DROP TRIGGER audit_events_no_update`,
		`UPDATE audit_events SET actor = 'admin:mallory' WHERE seq = 3`,
	} {
		if _, err := db.ExecContext(t.Context(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	resp, err = r.VerifyAudit(t.Context(), &meshcav1.VerifyAuditRequest{})
	if err != nil {
		t.Fatal(err)
	}
	hash2, err := st.AuditHashAt(t.Context(), 2)
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetOk() || resp.GetEvents() != 2 || !strings.Contains(resp.GetProblem(), "seq 3") ||
		resp.GetHeadSeq() != 2 || resp.GetHeadHash() != hex.EncodeToString(hash2) {
		t.Fatalf("VerifyAudit of a tampered chain = %v, want not ok, broken at seq 3 after 2 events ending at hash %x", resp, hash2)
	}
}

func TestReadsStoreFailure(t *testing.T) {
	r, st, _ := openReads(t)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	calls := map[string]func() error{
		"ListCertificates": func() error {
			_, err := r.ListCertificates(t.Context(), &meshcav1.ListCertificatesRequest{})
			return err
		},
		"GetCertificate": func() error {
			_, err := r.GetCertificate(t.Context(), &meshcav1.GetCertificateRequest{Serial: "a1"})
			return err
		},
		"ListRevocations": func() error {
			_, err := r.ListRevocations(t.Context(), &meshcav1.ListRevocationsRequest{})
			return err
		},
		"ListAuditEvents": func() error {
			_, err := r.ListAuditEvents(t.Context(), &meshcav1.ListAuditEventsRequest{})
			return err
		},
		"VerifyAudit": func() error {
			_, err := r.VerifyAudit(t.Context(), &meshcav1.VerifyAuditRequest{})
			return err
		},
	}
	for name, call := range calls {
		err := call()
		wantCode(t, err, codes.Unavailable)
		if strings.Contains(err.Error(), "closed") {
			t.Fatalf("%s: the store's error reached the caller: %v", name, err)
		}
	}
}
