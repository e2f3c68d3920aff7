package embedded

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"

	// The SQLite driver FerretDB itself uses (same module, same version):
	// one SQLite implementation in the binary, one file format.
	_ "modernc.org/sqlite"
)

// Names from FerretDB v1.24.0's internal/backends/sqlite/metadata: every
// database is a "<name>.sqlite" file holding the table _ferretdb_collections
// (name, table_name, settings), one row per collection, and each
// collection's table stores the document as JSON in _ferretdb_sjson.
const (
	sqliteExt       = ".sqlite"
	collectionsMeta = "_ferretdb_collections"
	// idExpr is metadata.IDColumn, the expression FerretDB compares when it
	// pushes {_id: ...} down. An expression index is used only for the same
	// expression, written the same way.
	idExpr = `_ferretdb_sjson->'$._id'`
	// idIndexSuffix names our index "<table>_rcm_id"; FerretDB names its own
	// "<table>_<index name>" and never lists ours.
	idIndexSuffix = "_rcm_id"
	// busyTimeoutMS is how long a statement waits for FerretDB's writers
	// before SQLITE_BUSY.
	busyTimeoutMS = 5000
)

// ensureIDIndexes creates the missing _id expression indexes in every
// database file of dir.
func ensureIDIndexes(ctx context.Context, dir string) error {
	files, err := filepath.Glob(filepath.Join(dir, "*"+sqliteExt))
	if err != nil {
		return err
	}
	var errs []error
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := ensureFileIDIndexes(ctx, f); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", filepath.Base(f), err))
		}
	}
	return errors.Join(errs...)
}

// ensureFileIDIndexes looks for collection tables without the index over a
// read-only connection, and opens a writable one only to create what is
// missing. The read-only look costs FerretDB nothing, and it never deletes
// WAL files on close, so it cannot disturb a database that FerretDB drops
// (removes) and recreates at the same moment.
func ensureFileIDIndexes(ctx context.Context, path string) error {
	missing, err := tablesWithoutIDIndex(ctx, path)
	if err != nil || len(missing) == 0 {
		return err
	}
	db, err := openSQLite(path, "rw")
	if err != nil {
		return err
	}
	defer db.Close()
	for _, table := range missing {
		q := fmt.Sprintf(`CREATE INDEX IF NOT EXISTS %s ON %s (%s)`,
			quoteIdent(table+idIndexSuffix), quoteIdent(table), idExpr)
		if _, err := db.ExecContext(ctx, q); err != nil {
			if strings.Contains(err.Error(), "no such table") {
				continue // dropped since we looked
			}
			return fmt.Errorf("index %s: %w", table, err)
		}
	}
	return nil
}

// tablesWithoutIDIndex lists the collection tables of the database file at
// path that lack the _id expression index.
func tablesWithoutIDIndex(ctx context.Context, path string) ([]string, error) {
	db, err := openSQLite(path, "ro")
	if err != nil {
		return nil, err
	}
	defer db.Close()
	// A file FerretDB has just created may not hold its metadata table yet.
	var n int
	err = db.QueryRowContext(ctx,
		`SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?`, collectionsMeta).Scan(&n)
	if err != nil || n == 0 {
		return nil, err
	}
	rows, err := db.QueryContext(ctx, fmt.Sprintf(`
		SELECT c.table_name FROM %s AS c
		WHERE EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = c.table_name)
		  AND NOT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = c.table_name || ?)
		ORDER BY c.table_name`, quoteIdent(collectionsMeta)), idIndexSuffix)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var tables []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			return nil, err
		}
		tables = append(tables, t)
	}
	return tables, rows.Err()
}

// openSQLite opens the existing database file at path with mode "ro" or
// "rw"; neither creates a file, so a database FerretDB has just dropped
// stays dropped.
func openSQLite(path, mode string) (*sql.DB, error) {
	q := url.Values{}
	q.Set("mode", mode)
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeoutMS))
	dsn := "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	return db, nil
}

// quoteIdent quotes an SQLite identifier.
func quoteIdent(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}
