package postgres

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/meshca/meshca/store/internal/sqlq"
)

// pgxQuerier is what a pool, a connection and a transaction share.
type pgxQuerier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// on adapts a pool, connection or transaction to sqlq.Querier.
type on struct{ q pgxQuerier }

func (o on) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	tag, err := o.q.Exec(ctx, query, args...)
	return tag.RowsAffected(), err
}

func (o on) QueryRow(ctx context.Context, query string, args ...any) sqlq.Scanner {
	return o.q.QueryRow(ctx, query, args...)
}

func (o on) Query(ctx context.Context, query string, args []any, each func(sqlq.Scanner) error) error {
	rows, err := o.q.Query(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	return sqlq.EachRow(rows, each)
}
