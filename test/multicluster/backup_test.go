package multicluster

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"

	"github.com/meshca/meshca/store/postgres/pgtest"
	"github.com/meshca/meshca/test/harness"
)

// TestBackupRestoreDrill runs the restore drill of docs/operations.md: a
// root and an issuer on PostgreSQL are backed up (pg_dump of each database,
// a tar of each data directory, the audit checkpoints and their public keys
// copied elsewhere), destroyed (databases dropped, data directories
// removed) and restored. Issuance must resume under the same root, the
// certificates issued before the backup must still be listed, and the
// restored audit chains must verify against the checkpoints kept aside.
func TestBackupRestoreDrill(t *testing.T) {
	pgBin := os.Getenv(pgtest.EnvBin)
	if pgBin == "" {
		pgBin = pgtest.DefaultBin
	}
	adminDSN := pgtest.AdminDSN(t)
	rootDSN, eastDSN := pgtest.CreateDatabase(t, adminDSN), pgtest.CreateDatabase(t, adminDSN)
	root := startRoot(t, fmt.Sprintf("store: {dsn: %q}\n", rootDSN))
	east := startIssuer(t, root, "east", "east.example", fmt.Sprintf("store: {dsn: %q}\n", eastDSN))
	before := startWorkload(t, east, root.BundlePath(), "shop", "frontend", time.Hour)
	svid, err := before.Source.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	oldSerial := fmt.Sprintf("%x", svid.Certificates[0].SerialNumber)
	oldRoots := root.roots(t)
	bundlePEM, err := os.ReadFile(root.BundlePath())
	if err != nil {
		t.Fatal(err)
	}

	// Back up: stop the servers (each signs a last checkpoint), dump the
	// databases, archive the data directories, ship the checkpoints.
	before.Stop(t)
	east.Stop(t)
	root.Stop(t)
	backup := t.TempDir()
	parts := []struct {
		name, dsn, dir string
	}{{"root", rootDSN, root.Dir}, {"east", eastDSN, east.Dir}}
	for _, p := range parts {
		pgTool(t, pgBin, "pg_dump", "--format=custom", "--file", filepath.Join(backup, p.name+".dump"), "--dbname", p.dsn)
		tool(t, "tar", "--create", "--file", filepath.Join(backup, p.name+".tar"), "--directory", p.dir, "--exclude", "./admin.sock", ".")
		shipped := filepath.Join(backup, p.name+"-checkpoints")
		for _, f := range []string{"latest.json", "checkpoint-key.pub.pem"} {
			copyFile(t, filepath.Join(p.dir, "audit-checkpoints", f), filepath.Join(shipped, f))
		}
	}

	// Destroy.
	for _, p := range parts {
		pgTool(t, pgBin, "dropdb", "--maintenance-db", adminDSN, "--force", dbName(t, p.dsn))
		if err := os.RemoveAll(p.dir); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := run(t, "audit", "verify", "--store-dsn", rootDSN); err == nil {
		t.Fatal("audit verify passed on a dropped database")
	}

	// Restore.
	for _, p := range parts {
		pgTool(t, pgBin, "createdb", "--maintenance-db", adminDSN, dbName(t, p.dsn))
		pgTool(t, pgBin, "pg_restore", "--exit-on-error", "--single-transaction", "--dbname", p.dsn, filepath.Join(backup, p.name+".dump"))
		if err := os.MkdirAll(p.dir, 0o700); err != nil {
			t.Fatal(err)
		}
		tool(t, "tar", "--extract", "--file", filepath.Join(backup, p.name+".tar"), "--directory", p.dir)
		shipped := filepath.Join(backup, p.name+"-checkpoints")
		out, err := run(t, "audit", "verify", "--store-dsn", p.dsn, "--checkpoint", filepath.Join(shipped, "latest.json"))
		if err != nil || !strings.Contains(out, "reaches 1 checkpoint") {
			t.Errorf("audit verify of the restored %s database: err %v, output %q", p.name, err, out)
		}
	}
	root.restart(t)
	east.restart(t)

	if got := root.roots(t); !slices.Equal(got, oldRoots) {
		t.Errorf("roots after restore %v, want %v", got, oldRoots)
	}
	if got := east.certSerials(t, before.ID.String()); !slices.Contains(got, oldSerial) {
		t.Errorf("certificate %s issued before the backup is not listed after restore: %v", oldSerial, got)
	}
	after := startWorkload(t, east, root.BundlePath(), "shop", "backend", time.Hour)
	verifyUnder(t, after, bundlePEM)
	after.Stop(t)
	east.Stop(t)
	root.Stop(t)
	for _, p := range parts {
		// The chain written since the restore extends the one backed up.
		out, err := run(t, "audit", "verify", "--store-dsn", p.dsn,
			"--checkpoint", filepath.Join(backup, p.name+"-checkpoints", "latest.json"),
			"--checkpoint", filepath.Join(p.dir, "audit-checkpoints", "latest.json"))
		if err != nil || !strings.Contains(out, "reaches 2 checkpoint") {
			t.Errorf("audit verify of %s after the restart: err %v, output %q", p.name, err, out)
		}
	}
}

// verifyUnder checks w's SVID chains to a root in the PEM bundle.
func verifyUnder(t *testing.T, w *workload, bundlePEM []byte) {
	t.Helper()
	svid, err := w.Source.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	b, err := x509bundle.Parse(w.ID.TrustDomain(), bundlePEM)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	for _, c := range b.X509Authorities() {
		roots.AddCert(c)
	}
	inter := x509.NewCertPool()
	for _, c := range svid.Certificates[1:] {
		inter.AddCert(c)
	}
	if _, err := svid.Certificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("SVID issued after the restore does not verify under the bundle backed up: %v", err)
	}
}

// pgTool runs a PostgreSQL client program from dir.
func pgTool(t *testing.T, dir, name string, args ...string) {
	t.Helper()
	tool(t, filepath.Join(dir, name), args...)
}

func tool(t *testing.T, name string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out.String())
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	harness.WriteFile(t, to, string(b))
}

// dbName is the database a postgres:// DSN names.
func dbName(t *testing.T, dsn string) string {
	t.Helper()
	i := strings.LastIndex(dsn, "/")
	name, _, _ := strings.Cut(dsn[i+1:], "?")
	if i < 0 || name == "" {
		t.Fatalf("no database in DSN %q", dsn)
	}
	return name
}
