// Package migrations holds meshca's versioned SQL schema, one directory per
// SQL dialect, embedded in the binary. The files are goose v3 SQL migrations
// (github.com/pressly/goose/v3): "-- +goose Up" / "-- +goose Down" sections,
// numbered 00001_name.sql, applied in order and never edited once released.
//
// Conventions shared by every dialect, so that backends read the same data
// the same way:
//   - times are integer Unix seconds, UTC;
//   - absent text is the empty string, never NULL;
//   - audit_events.seq starts at 1 and has no gaps; prev_hash and hash are the
//     32-byte SHA-256 values of the audit chain (see store.ChainHash).
package migrations

import "embed"

// SQLite holds the SQLite migrations under the directory "sqlite"; pass
// fs.Sub(SQLite, "sqlite") to goose.
//
//go:embed sqlite/*.sql
var SQLite embed.FS

// Postgres holds the PostgreSQL migrations under the directory "postgres";
// pass fs.Sub(Postgres, "postgres") to goose.
//
//go:embed postgres/*.sql
var Postgres embed.FS
