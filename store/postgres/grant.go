package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// GrantRuntime gives role what a running meshca needs on the database at
// dsn, and no more, so that the process serving requests cannot rewrite the
// audit log: run it as the role that owns the tables (the one that ran
// [Migrate]), after every migration, since it grants on the tables that
// exist when it runs.
//
// role gets USAGE on the schema; SELECT, INSERT, UPDATE and DELETE on every
// table in it; USAGE and SELECT on its sequences; but only SELECT and INSERT
// on audit_events, SELECT and UPDATE on audit_chain_head (whose trigger only
// lets the head move forward) and SELECT on goose_db_version (so that Open
// finds the schema current, and fails rather than migrating if it is not).
// Not owning the tables, role cannot ALTER TABLE ... DISABLE TRIGGER, DROP
// TRIGGER or TRUNCATE, which the append-only triggers cannot stop an owner
// from doing.
//
// It refuses a role that is a superuser or a member of the tables' owner:
// either could do all of that anyway. Running it again changes nothing.
func GrantRuntime(ctx context.Context, dsn, role string) error {
	if err := grantRuntime(ctx, dsn, role); err != nil {
		return fmt.Errorf("postgres: grant runtime role %q: %w", role, err)
	}
	return nil
}

func grantRuntime(ctx context.Context, dsn, role string) error {
	if role == "" {
		return errors.New("empty role name")
	}
	pcfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return fmt.Errorf("dsn: %w", err)
	}
	conn, err := pgx.ConnectConfig(ctx, pcfg.ConnConfig)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	var super, ownerMember bool
	var schema string
	err = tx.QueryRow(ctx, `
		SELECT r.rolsuper, pg_has_role(r.oid, t.tableowner, 'MEMBER'), t.schemaname
		FROM pg_roles r, pg_tables t
		WHERE r.rolname = $1 AND t.tablename = 'audit_events' AND t.schemaname = current_schema()`,
		role).Scan(&super, &ownerMember, &schema)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return errors.New("no such role, or no audit_events table in the current schema: migrate first")
	case err != nil:
		return err
	case super:
		return errors.New("the role is a superuser: it could disable the audit log's triggers")
	case ownerMember:
		return errors.New("the role owns the tables (or is a member of their owner): it could disable the audit log's triggers")
	}
	r, s := pgx.Identifier{role}.Sanitize(), pgx.Identifier{schema}.Sanitize()
	for _, q := range []string{
		`GRANT USAGE ON SCHEMA ` + s + ` TO ` + r,
		`GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA ` + s + ` TO ` + r,
		`GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA ` + s + ` TO ` + r,
		`REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON audit_events FROM ` + r,
		`REVOKE INSERT, DELETE, TRUNCATE, REFERENCES, TRIGGER ON audit_chain_head FROM ` + r,
		`REVOKE INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON goose_db_version FROM ` + r,
	} {
		if _, err := tx.Exec(ctx, q); err != nil {
			return err
		}
	}
	return tx.Commit(ctx)
}

// CanBypassAuditTriggers reports whether the role the store is connected as
// could disable the audit log's append-only triggers: it is a superuser, or
// a member of the role that owns audit_events. Such a role should only
// migrate; see [GrantRuntime].
func (s *Store) CanBypassAuditTriggers(ctx context.Context) (bool, error) {
	var can bool
	err := s.pool.QueryRow(ctx, `
		SELECT r.rolsuper OR pg_has_role(current_user, t.tableowner, 'MEMBER')
		FROM pg_roles r, pg_tables t
		WHERE r.rolname = current_user AND t.tablename = 'audit_events' AND t.schemaname = current_schema()`).Scan(&can)
	if err != nil {
		return false, fmt.Errorf("postgres: check audit privileges: %w", err)
	}
	return can, nil
}
