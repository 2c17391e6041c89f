package node

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers "pgx"

	"github.com/controlfeed/controlfeed/feed/nop"
	"github.com/controlfeed/controlfeed/kv"
	"github.com/controlfeed/controlfeed/outbox"
)

// A producer's database may be PostgreSQL: Config.DB is then a URL,
// postgres://user@host:port/dbname?sslmode=... (IsPostgresURL). Credentials
// come from the URL or from the standard PG* environment variables and
// ~/.pgpass, which pgx reads; Open never logs them, and every message names
// the database by RedactDB. Only producers: a node's database stays SQLite
// (Validate refuses a source with a PostgreSQL URL). On PostgreSQL:
//
//   - Open migrates the outbox and kv schemas (no applier tables) and
//     records no role (package dbrole is SQLite's; a PostgreSQL database
//     is always a producer's);
//   - there is no pump lock file: any number of producers may run serve on
//     one database, and the outbox's drainer lock (a session advisory
//     lock) makes exactly one of them publish while the others stand by
//     (Status.Process.PumpStandby) and take over when it dies;
//   - the file artifact store has no default directory (set Artifact.Dir);
//   - unless the URL sets application_name, Open sets it to
//     "controlfeed NODE pid PID", so the drainer lock's holder is named in
//     pg_stat_activity and in "controlfeed status".

// ErrPostgresUnavailable is wrapped by the error of OpenPostgres and Open
// when the PostgreSQL server does not answer (connection refused or cut, a
// timeout), as opposed to answering with an error (a wrong password, a
// missing database): the first is worth retrying, the second is not.
var ErrPostgresUnavailable = errors.New("the PostgreSQL server does not answer")

// IsPostgresURL reports whether db names a PostgreSQL database
// (postgres:// or postgresql://) rather than a SQLite file.
func IsPostgresURL(db string) bool {
	return strings.HasPrefix(db, "postgres://") || strings.HasPrefix(db, "postgresql://")
}

// RedactDB returns db fit for a log or a message: a PostgreSQL URL with its
// password (in the user information or a password= parameter) replaced by
// "xxxxx"; a SQLite path unchanged. An unparsable URL is replaced whole.
func RedactDB(db string) string {
	if !IsPostgresURL(db) {
		return db
	}
	u, err := url.Parse(db)
	if err != nil {
		return "(a PostgreSQL URL that does not parse)"
	}
	q := u.Query()
	if q.Has("password") {
		q.Set("password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}

// withApplicationName sets application_name in the URL db unless it has
// one.
func withApplicationName(db, name string) string {
	u, err := url.Parse(db)
	if err != nil {
		return db // sql.Open reports it
	}
	q := u.Query()
	if q.Has("application_name") {
		return db
	}
	q.Set("application_name", fmt.Sprintf("controlfeed %s pid %d", name, os.Getpid()))
	u.RawQuery = strings.ReplaceAll(q.Encode(), "+", "%20") // pgx does not read "+" as a space
	return u.String()
}

// OpenPostgres opens the PostgreSQL database at the URL db through pgx's
// database/sql driver, checks that it answers within ctx and migrates the
// outbox and kv schemas (idempotent, safe from several processes at once).
// name, if set, becomes application_name when the URL gives none. The
// caller closes it. Errors name the database by RedactDB.
func OpenPostgres(ctx context.Context, db, name string) (*sql.DB, error) {
	pool, err := openPostgresPool(ctx, db, name)
	if err != nil {
		return nil, err
	}
	if err := migratePostgres(ctx, pool, db); err != nil {
		pool.Close()
		return nil, err
	}
	return pool, nil
}

// openPostgresPool opens and pings, without migrating.
func openPostgresPool(ctx context.Context, db, name string) (*sql.DB, error) {
	if name != "" {
		db = withApplicationName(db, name)
	}
	pool, err := sql.Open("pgx", db)
	if err != nil {
		return nil, fmt.Errorf("node: open %s: %w", RedactDB(db), err)
	}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := pool.PingContext(pctx); err != nil {
		pool.Close()
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) { // no answer (a refused or cut connection, a timeout), not a refusal such as a wrong password
			err = fmt.Errorf("%w: %w", ErrPostgresUnavailable, err)
		}
		return nil, fmt.Errorf("node: connect to %s: %w (check the URL, the PG* environment variables and that the server runs)", RedactDB(db), err)
	}
	return pool, nil
}

// migratePostgres runs the producer's migrations: outbox and kv.
func migratePostgres(ctx context.Context, db *sql.DB, url string) error {
	for _, m := range []func(context.Context, *sql.DB) error{outbox.Migrate, kv.Migrate} {
		if err := m(ctx, db); err != nil {
			return fmt.Errorf("node: migrate %s: %w", RedactDB(url), err)
		}
	}
	return nil
}

// OpenPostgresReadOnly opens the PostgreSQL database at the URL db for
// commands that only read (status, kv get, kv list): no migration, and
// every transaction of the pool is read-only
// (default_transaction_read_only), so nothing it runs can change the
// database. The caller closes it.
func OpenPostgresReadOnly(ctx context.Context, db string) (*sql.DB, error) {
	u, err := url.Parse(db)
	if err == nil {
		q := u.Query()
		q.Set("default_transaction_read_only", "on")
		u.RawQuery = q.Encode()
		db = u.String()
	}
	return openPostgresPool(ctx, db, "controlfeed (read-only)")
}

// validatePostgres is Validate's part for a PostgreSQL DB.
func (c *Config) validatePostgres() error {
	if src := cmp.Or(c.FeedSource, DefaultFeed); src != nop.Name {
		return fmt.Errorf("node: config: feed source %q with the PostgreSQL database %s: a node's database must be a SQLite file "+
			"(the applier, its cursor and applied events live in the node's own SQLite); PostgreSQL holds producers only: "+
			"give the node --db /path/node.db, and the PostgreSQL URL to the producer (serve --feed-sink)", src, RedactDB(c.DB))
	}
	if cmp.Or(c.ArtifactStore, DefaultArtifactStore) == DefaultArtifactStore && c.Artifact.Dir == "" {
		return fmt.Errorf("node: config: the file artifact store has no default directory with the PostgreSQL database %s: "+
			"set --artifact-dir (the directory the nodes read too), or use --artifact-store jetstream", RedactDB(c.DB))
	}
	return nil
}

// pgUndefinedTable is PostgreSQL's SQLSTATE for a table that does not exist.
const pgUndefinedTable = "42P01"

// readProducerStatus is ReadStatus on a PostgreSQL producer database: the
// outbox counts and the drainer lock's holder (it has no applier tables).
func readProducerStatus(ctx context.Context, db *sql.DB) (Status, error) {
	oc, err := outbox.ReadCounts(ctx, db)
	if err != nil {
		if pgErr := (*pgconn.PgError)(nil); errors.As(err, &pgErr) && pgErr.Code == pgUndefinedTable {
			return Status{}, fmt.Errorf("node: read status: %w: this PostgreSQL database has no controlfeed outbox yet: "+
				"no producer has run on it (serve --feed-sink or kv put creates the tables); check that --db names the right database", err)
		}
		return Status{}, fmt.Errorf("node: read status: %w", err)
	}
	s := Status{OutboxPending: oc.Pending, OutboxDead: oc.Dead}
	if !oc.OldestPending.IsZero() {
		t := oc.OldestPending
		s.OutboxOldestPending = &t
	}
	d, err := outbox.ReadDrainer(ctx, db)
	if err != nil {
		return Status{}, fmt.Errorf("node: read status: %w", err)
	}
	if d != nil {
		s.PumpHolder = &PumpHolder{BackendPID: d.PID, ApplicationName: d.ApplicationName, ClientAddr: d.ClientAddr, Since: d.Since}
	}
	return s, nil
}

// secretInText matches a password in a PostgreSQL URL ("postgres://user:PW@")
// and in a "password=" parameter, wherever they stand in a text.
var secretInText = regexp.MustCompile(`((?:postgres|postgresql)://[^:/@\s"']*:)[^@\s"']*@|((?:[?&\s]|^)password=)[^&\s"']*`)

// RedactText returns s with every PostgreSQL password in it replaced by
// xxxxx: the last line of defence for messages that quote user input (a
// URL given to the wrong flag) on their way to the terminal or a log.
func RedactText(s string) string {
	return secretInText.ReplaceAllStringFunc(s, func(m string) string {
		sub := secretInText.FindStringSubmatch(m)
		if sub[1] != "" {
			return sub[1] + "xxxxx@"
		}
		return sub[2] + "xxxxx"
	})
}
