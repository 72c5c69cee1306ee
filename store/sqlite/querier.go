package sqlite

import (
	"context"
	"database/sql"

	"github.com/meshca/meshca/store/internal/sqlq"
)

// sqlQuerier is what a *sql.DB and a *sql.Tx share.
type sqlQuerier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// on adapts a *sql.DB or *sql.Tx to sqlq.Querier.
type on struct{ q sqlQuerier }

func (o on) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	res, err := o.q.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (o on) QueryRow(ctx context.Context, query string, args ...any) sqlq.Scanner {
	return o.q.QueryRowContext(ctx, query, args...)
}

func (o on) Query(ctx context.Context, query string, args []any, each func(sqlq.Scanner) error) error {
	rows, err := o.q.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	return sqlq.EachRow(rows, each)
}
