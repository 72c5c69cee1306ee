// Package pgtest gives tests a PostgreSQL database of their own: on the
// shared test server (NewDatabase), or on a private throw-away cluster the
// test starts and stops itself (StartCluster), for fault tests.
//
// The shared server is the one `make test` starts (test/testbed/postgres.mk):
// $MESHCA_TEST_POSTGRES_DSN, by default
// postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable, trust auth.
// When it cannot be reached a test fails if CI=true and skips otherwise.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// envDSN names the environment variable with the admin DSN of the shared
// test server.
const envDSN = "MESHCA_TEST_POSTGRES_DSN"

// DefaultDSN is the shared test server when EnvDSN is unset.
const DefaultDSN = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// connectTimeout bounds connecting to a server and each admin statement.
const connectTimeout = 10 * time.Second

// AdminDSN returns the DSN of the shared test server's maintenance database,
// after checking the server answers. If it does not, tb fails when CI=true
// and is skipped otherwise.
func AdminDSN(tb testing.TB) string {
	tb.Helper()
	dsn := os.Getenv(envDSN)
	if dsn == "" {
		dsn = DefaultDSN
	}
	ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		unavailable(tb, "PostgreSQL is not reachable at %s: %v", redact(dsn), err)
	}
	conn.Close(ctx)
	return dsn
}

// unavailable fails tb under CI and skips it otherwise: a missing test bed
// must never pass silently in CI.
func unavailable(tb testing.TB, format string, args ...any) {
	tb.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		tb.Fatalf("%s (CI=true: PostgreSQL is required)", msg)
	}
	tb.Skipf("%s; `make test` starts it (test/testbed/postgres.mk)", msg)
}

// NewDatabase creates an empty database meshca_test_<random> on the shared
// test server and returns its DSN. The database is dropped (with FORCE,
// closing any connection left open) when tb ends.
func NewDatabase(tb testing.TB) string {
	tb.Helper()
	return CreateDatabase(tb, AdminDSN(tb))
}

// CreateDatabase creates an empty database meshca_test_<random> through the
// server at adminDSN, drops it when tb ends, and returns its DSN.
func CreateDatabase(tb testing.TB, adminDSN string) string {
	tb.Helper()
	name := "meshca_test_" + randomHex(tb, 8)
	if err := adminExec(adminDSN, "CREATE DATABASE "+name); err != nil {
		tb.Fatalf("create database %s: %v", name, err)
	}
	tb.Cleanup(func() {
		if err := adminExec(adminDSN, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			tb.Errorf("drop database %s: %v", name, err)
		}
	})
	dsn, err := withDatabase(adminDSN, name)
	if err != nil {
		tb.Fatal(err)
	}
	return dsn
}

// withDatabase returns dsn (a postgres:// URL) pointed at database name.
func withDatabase(dsn, name string) (string, error) {
	u, err := url.Parse(dsn)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "", fmt.Errorf("pgtest: DSN %s is not a postgres:// URL", redact(dsn))
	}
	u.Path = "/" + name
	return u.String(), nil
}

// Exec runs one statement on the database at dsn, on a connection of its
// own: for tests that tamper with rows behind the store's back.
func Exec(tb testing.TB, dsn, sql string, args ...any) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		tb.Fatalf("connect: %v", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		tb.Fatalf("%s: %v", sql, err)
	}
}

func adminExec(dsn, sql string) error {
	ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

func randomHex(tb testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		tb.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// redact hides a password in a URL DSN, for messages.
func redact(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.User == nil {
		return strings.SplitN(dsn, "?", 2)[0]
	}
	return u.Redacted()
}
