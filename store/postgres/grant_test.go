package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/postgres/pgtest"
	"github.com/meshca/meshca/store/storetest"
)

// roleDatabase is a test database owned by a non-superuser migration role,
// with a non-superuser runtime role granted by GrantRuntime.
type roleDatabase struct {
	ownerDSN, runtimeDSN, runtimeRole string
}

// roles is a pair of non-superuser login roles: one to own and migrate, one
// to run as.
type roles struct{ owner, runtime string }

// newRoles creates the two roles, dropped when tb ends (after the databases
// of its sub-tests).
func newRoles(tb testing.TB) roles {
	tb.Helper()
	admin := pgtest.AdminDSN(tb)
	return roles{owner: newRole(tb, admin, "owner"), runtime: newRole(tb, admin, "runtime")}
}

// newRoleDatabase creates a database owned by r.owner, migrates it as the
// owner and grants r.runtime. The database is dropped when tb ends.
func newRoleDatabase(tb testing.TB, r roles) roleDatabase {
	tb.Helper()
	admin := pgtest.AdminDSN(tb)
	owner, runtime := r.owner, r.runtime
	dsn := pgtest.CreateDatabase(tb, admin)
	u, err := url.Parse(dsn)
	if err != nil {
		tb.Fatal(err)
	}
	pgtest.Exec(tb, admin, `ALTER DATABASE `+strings.TrimPrefix(u.Path, "/")+` OWNER TO `+owner)
	db := roleDatabase{ownerDSN: withUser(tb, dsn, owner), runtimeDSN: withUser(tb, dsn, runtime), runtimeRole: runtime}
	if _, err := Migrate(context.Background(), db.ownerDSN); err != nil {
		tb.Fatal(err)
	}
	if err := GrantRuntime(context.Background(), db.ownerDSN, runtime); err != nil {
		tb.Fatal(err)
	}
	return db
}

func newRole(tb testing.TB, adminDSN, kind string) string {
	tb.Helper()
	name := "meshca_test_" + kind + "_" + randomSuffix(tb)
	pgtest.Exec(tb, adminDSN, `CREATE ROLE `+name+` LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE`)
	tb.Cleanup(func() { pgtest.Exec(tb, adminDSN, `DROP ROLE IF EXISTS `+name) })
	return name
}

func randomSuffix(tb testing.TB) string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		tb.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func withUser(tb testing.TB, dsn, user string) string {
	tb.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		tb.Fatal(err)
	}
	u.User = url.User(user)
	return u.String()
}

// TestRuntimeRoleCannotRewriteAudit performs, as the runtime role, what the
// owner of the tables could do to the audit log behind the triggers' back:
// each is refused, while the store works as that role.
func TestRuntimeRoleCannotRewriteAudit(t *testing.T) {
	db := newRoleDatabase(t, newRoles(t))
	s := openTest(t, Config{DSN: db.runtimeDSN})
	storetest.Seed(t, s, 3)
	if _, err := s.Revoke(t.Context(), store.Revocation{Kind: store.RevokeSerial, Value: "c0", RevokedBy: "admin:alice"},
		store.AuditEvent{Actor: "admin:alice", Action: "revoke"}); err != nil {
		t.Fatalf("Revoke as the runtime role: %v", err)
	}
	if _, err := s.PruneCertificates(t.Context(), storetest.T0.AddDate(1, 0, 0)); err != nil {
		t.Fatalf("PruneCertificates as the runtime role: %v", err)
	}
	if can, err := s.CanBypassAuditTriggers(t.Context()); err != nil || can {
		t.Fatalf("CanBypassAuditTriggers as the runtime role = %v, %v; want false", can, err)
	}
	if can, err := openTest(t, Config{DSN: db.ownerDSN}).CanBypassAuditTriggers(t.Context()); err != nil || !can {
		t.Fatalf("CanBypassAuditTriggers as the owner = %v, %v; want true", can, err)
	}
	conn := rawConn(t, db.runtimeDSN)
	for _, q := range []string{
		`UPDATE audit_events SET detail = 'x' WHERE seq = 1`,
		`DELETE FROM audit_events WHERE seq = 3`,
		`TRUNCATE audit_events`,
		`ALTER TABLE audit_events DISABLE TRIGGER USER`,
		`ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only`,
		`DROP TRIGGER audit_events_append_only ON audit_events`,
		`ALTER TABLE audit_chain_head DISABLE TRIGGER USER`,
		`DELETE FROM audit_chain_head`,
		`TRUNCATE audit_chain_head`,
		`INSERT INTO goose_db_version (version_id, is_applied) VALUES (999, true)`,
		`CREATE TABLE shadow (seq bigint)`,
	} {
		_, err := conn.Exec(t.Context(), q)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42501" { // insufficient_privilege
			t.Errorf("%s as the runtime role: err = %v, want insufficient_privilege", q, err)
		}
	}
	if _, err := conn.Exec(t.Context(), `UPDATE audit_chain_head SET seq = 1`); err == nil || !strings.Contains(err.Error(), "cannot move back") {
		t.Errorf("moving the chain head back as the runtime role: err = %v, want the trigger to refuse", err)
	}
	head, err := VerifyAuditLog(t.Context(), db.runtimeDSN)
	if err != nil || head.Seq != 4 {
		t.Fatalf("VerifyAuditLog as the runtime role: head %+v, %v; want seq 4", head, err)
	}
}

func TestGrantRuntimeRefusesPowerfulRoles(t *testing.T) {
	db := newRoleDatabase(t, newRoles(t))
	owner, err := url.Parse(db.ownerDSN)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ role, want string }{
		{"postgres", "superuser"},
		{owner.User.Username(), "owns the tables"},
		{"meshca_no_such_role", "no such role"},
		{"", "empty role name"},
	} {
		if err := GrantRuntime(t.Context(), db.ownerDSN, tt.role); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("GrantRuntime(%q) = %v, want an error containing %q", tt.role, err, tt.want)
		}
	}
}

// TestConformanceAsRuntimeRole runs the conformance suites with the store
// connected as the runtime role, so that every store operation is known to
// need no more than GrantRuntime gives.
func TestConformanceAsRuntimeRole(t *testing.T) {
	r := newRoles(t)
	open := func(t *testing.T) *Store {
		s, err := Open(t.Context(), Config{DSN: newRoleDatabase(t, r).runtimeDSN, MaxConns: 4})
		if err != nil {
			t.Fatalf("Open as the runtime role: %v", err)
		}
		return s
	}
	t.Run("Store", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) store.Store { return open(t) })
	})
	t.Run("RootStore", func(t *testing.T) {
		storetest.RunRootStore(t, func(t *testing.T) storetest.RootStoreUnderTest { return open(t) })
	})
	t.Run("RevocationStore", func(t *testing.T) {
		storetest.RunRevocationStore(t, func(t *testing.T) storetest.RevocationStoreUnderTest { return open(t) })
	})
}
