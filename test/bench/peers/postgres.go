package main

import (
	"context"
	"fmt"
	"net/url"

	"github.com/jackc/pgx/v5"
)

// pgDatabase is a database created for one run and dropped after it.
type pgDatabase struct {
	adminDSN, name, dsn string
}

// newPGDatabase creates a database with a random name on the server of
// adminDSN and returns it with its DSN.
func newPGDatabase(ctx context.Context, adminDSN string) (*pgDatabase, error) {
	u, err := url.Parse(adminDSN)
	if err != nil {
		return nil, fmt.Errorf("postgres dsn: %w", err)
	}
	name := "meshca_peers_" + randomID()[:12]
	conn, err := pgx.Connect(ctx, adminDSN)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	u.Path = "/" + name
	return &pgDatabase{adminDSN: adminDSN, name: name, dsn: u.String()}, nil
}

// backendPIDs returns the server processes serving connections to the
// database: their CPU is the database's share of each request.
func (d *pgDatabase) backendPIDs(ctx context.Context) ([]int, error) {
	conn, err := pgx.Connect(ctx, d.adminDSN)
	if err != nil {
		return nil, err
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, "SELECT pid FROM pg_stat_activity WHERE datname = $1", d.name)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[int])
}

func (d *pgDatabase) drop(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, d.adminDSN)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+d.name+" WITH (FORCE)")
	return err
}
