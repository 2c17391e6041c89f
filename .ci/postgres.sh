# Sourced by .ci/run (bash): start_test_postgres starts a throwaway
# PostgreSQL cluster for the tests and exports its URL as
# CONTROLFEED_TEST_POSTGRES_URL; the cluster is stopped and removed when the
# calling shell exits. Usable by hand too:
#
#   bash -c '. .ci/postgres.sh && start_test_postgres && go test -race ./outbox/...'
#
# It uses initdb/pg_ctl from PATH or from Debian's /usr/lib/postgresql/*/bin,
# and installs Debian's postgresql package with apt-get only when neither has
# them (that needs root). The cluster belongs to an unprivileged user (initdb
# refuses root): the current user, or, under root, "postgres" (created by the
# Debian package) or a system user "controlfeed-pg" created here. It listens
# on a Unix socket in a private temporary directory only (no TCP), with trust
# authentication for its superuser "controlfeed", and fsync off: it holds
# nothing worth keeping.

find_pg_bindir() {
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(command -v initdb)"
    return 0
  fi
  local d found=""
  for d in /usr/lib/postgresql/*/bin; do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then found="$d"; fi
  done
  [ -n "$found" ] && echo "$found"
}

start_test_postgres() {
  local bindir
  bindir=$(find_pg_bindir || true)
  if [ -z "$bindir" ]; then
    echo "== installing Debian's postgresql (initdb not found)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    bindir=$(find_pg_bindir || true)
    if [ -z "$bindir" ]; then
      echo "start_test_postgres: initdb still not found after installing postgresql" >&2
      return 1
    fi
  fi

  local owner run=()
  if [ "$(id -u)" = 0 ]; then
    owner=postgres
    if ! id -u "$owner" >/dev/null 2>&1; then
      owner=controlfeed-pg
      id -u "$owner" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$owner"
    fi
    run=(runuser -u "$owner" --)
  fi

  PG_TEST_DIR=$(mktemp -d "${TMPDIR:-/tmp}/controlfeed-pg.XXXXXX")
  chmod 0755 "$PG_TEST_DIR"
  [ -n "${owner:-}" ] && chown "$owner" "$PG_TEST_DIR"
  PG_TEST_BINDIR="$bindir"
  PG_TEST_RUN=("${run[@]}")
  # A private port number: only names the socket file, as nothing listens on TCP.
  local port=$(( 20000 + RANDOM % 40000 ))

  "${run[@]}" "$bindir/initdb" -D "$PG_TEST_DIR/data" -U controlfeed --auth=trust -E UTF8 --no-locale >"$PG_TEST_DIR/initdb.log" 2>&1 ||
    { cat "$PG_TEST_DIR/initdb.log" >&2; return 1; }
  trap stop_test_postgres EXIT
  "${run[@]}" "$bindir/pg_ctl" -D "$PG_TEST_DIR/data" -l "$PG_TEST_DIR/server.log" -w -t 60 \
    -o "-c listen_addresses='' -c unix_socket_directories='$PG_TEST_DIR' -p $port -c fsync=off -c max_connections=300" start >/dev/null ||
    { cat "$PG_TEST_DIR/server.log" >&2; return 1; }
  export CONTROLFEED_TEST_POSTGRES_URL="postgres://controlfeed@/postgres?host=$PG_TEST_DIR&port=$port&sslmode=disable"
  # An abrupt restart (as after a crash) for the PostgreSQL chaos run:
  # pg_ctl reuses the server's options from postmaster.opts.
  export CONTROLFEED_TEST_POSTGRES_RESTART="${run[*]} $bindir/pg_ctl -D $PG_TEST_DIR/data -l $PG_TEST_DIR/server.log -m immediate -w -t 60 restart"
  echo "== test PostgreSQL ($("$bindir/postgres" --version)) at $CONTROLFEED_TEST_POSTGRES_URL"
}

stop_test_postgres() {
  [ -n "${PG_TEST_DIR:-}" ] || return 0
  "${PG_TEST_RUN[@]}" "$PG_TEST_BINDIR/pg_ctl" -D "$PG_TEST_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$PG_TEST_DIR"
  PG_TEST_DIR=
}
