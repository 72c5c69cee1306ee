package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestStoreConfigDriver(t *testing.T) {
	tests := []struct {
		name       string
		cfg        storeConfig
		wantDriver string
		wantErr    string
	}{
		{"default is sqlite", storeConfig{}, "sqlite", ""},
		{"sqlite path", storeConfig{DSN: "/var/lib/meshca/meshca.db"}, "sqlite", ""},
		{"postgres url", storeConfig{DSN: "postgres://meshca@db:5432/meshca"}, "postgres", ""},
		{"postgresql url", storeConfig{DSN: "postgresql://meshca@db/meshca"}, "postgres", ""},
		{"explicit postgres key=value", storeConfig{Driver: "postgres", DSN: "host=db dbname=meshca"}, "postgres", ""},
		{"postgres without dsn", storeConfig{Driver: "postgres"}, "postgres", "needs a dsn"},
		{"dsn file means postgres", storeConfig{DSNFile: "/etc/meshca/store/dsn"}, "postgres", ""},
		{"dsn and dsn file", storeConfig{DSN: "postgres://db/m", DSNFile: "/etc/meshca/store/dsn"}, "postgres", "not both"},
		{"dsn file with sqlite", storeConfig{Driver: "sqlite", DSNFile: "/etc/meshca/store/dsn"}, "sqlite", "for driver postgres"},
		{"unknown driver", storeConfig{Driver: "mysql"}, "mysql", "not supported"},
		{"negative grace", storeConfig{Retention: retentionConfig{Grace: duration(-time.Hour)}}, "sqlite", "negative"},
		{"negative checkpoint interval", storeConfig{Checkpoint: checkpointConfig{Interval: duration(-time.Minute)}}, "sqlite", "store checkpoint"},
		{"negative checkpoint keep", storeConfig{Checkpoint: checkpointConfig{Keep: -1}}, "sqlite", "store checkpoint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.cfg.driver(); got != tt.wantDriver {
				t.Errorf("driver() = %q, want %q", got, tt.wantDriver)
			}
			err := tt.cfg.validate()
			if tt.wantErr == "" && err != nil {
				t.Fatalf("validate() = %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("validate() = %v, want it to mention %q", err, tt.wantErr)
			}
		})
	}
}

// TestStoreDSNFile: the DSN is read from the file, trimmed; a missing,
// empty or oversized file is an error naming the file, never its content.
func TestStoreDSNFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("dsn", "postgres://meshca:s3cret@db/meshca\n")
	if got, err := (storeConfig{DSNFile: good}).postgresDSN(); err != nil || got != "postgres://meshca:s3cret@db/meshca" {
		t.Errorf("postgresDSN = %q, %v", got, err)
	}
	if got, err := (storeConfig{DSN: "postgres://inline/db"}).postgresDSN(); err != nil || got != "postgres://inline/db" {
		t.Errorf("inline postgresDSN = %q, %v", got, err)
	}
	for name, path := range map[string]string{
		"missing":   filepath.Join(dir, "nope"),
		"empty":     write("empty", " \n"),
		"oversized": write("big", "postgres://x/"+strings.Repeat("a", maxDSNFileSize)),
	} {
		_, err := (storeConfig{DSNFile: path}).postgresDSN()
		if err == nil || !strings.Contains(err.Error(), "dsnFile") || strings.Contains(err.Error(), "aaaa") {
			t.Errorf("%s: postgresDSN error = %v", name, err)
		}
	}
}

func TestStoreConfigYAML(t *testing.T) {
	cfg := defaultDevConfig()
	yaml := "store:\n  driver: postgres\n  dsn: postgres://meshca@db/meshca\n  retention:\n    grace: 48h\n    interval: 10m\n" +
		"  checkpoint:\n    interval: 30s\n    keyFile: /etc/meshca/checkpoint/key.pem\n    dir: /var/lib/meshca/ckpt\n    keep: 100\n"
	if err := decodeStrict([]byte(yaml), &cfg); err != nil {
		t.Fatal(err)
	}
	want := storeConfig{Driver: "postgres", DSN: "postgres://meshca@db/meshca",
		Retention: retentionConfig{Grace: duration(48 * time.Hour), Interval: duration(10 * time.Minute)},
		Checkpoint: checkpointConfig{Interval: duration(30 * time.Second), KeyFile: "/etc/meshca/checkpoint/key.pem",
			Dir: "/var/lib/meshca/ckpt", Keep: 100}}
	if cfg.Store != want {
		t.Fatalf("store = %+v, want %+v", cfg.Store, want)
	}
	err := decodeStrict([]byte("store:\n  retention:\n    keep: 1h\n"), &cfg)
	if err == nil || !strings.Contains(err.Error(), "store.retention.keep") {
		t.Fatalf("unknown retention field: err = %v, want it named", err)
	}
}

func TestStoreTarget(t *testing.T) {
	if _, err := storeTarget("", ""); err == nil {
		t.Error("no flag: want an error")
	}
	if _, err := storeTarget("postgres://x/y", "/d"); err == nil {
		t.Error("both flags: want an error")
	}
	cfg, err := storeTarget("", "/d")
	if err != nil || cfg.driver() != "sqlite" || cfg.DSN != "/d/meshca.db" {
		t.Errorf("--data-dir /d = %+v, %v", cfg, err)
	}
	cfg, err = storeTarget("postgres://x/y", "")
	if err != nil || cfg.driver() != "postgres" {
		t.Errorf("--store-dsn postgres://x/y = %+v, %v", cfg, err)
	}
}
