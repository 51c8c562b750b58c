# Start a throw-away PostgreSQL on loopback for the database tests (sourced by .ci/run).
# Needs root (Debian's postgresql package; the server runs as the postgres user).
start_test_postgres() {
  apt_install postgresql
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  PGDATA=$(mktemp -d /tmp/citygate-pg.XXXXXX)
  chown postgres "$PGDATA"
  su postgres -s /bin/sh -c "$bin/initdb -D $PGDATA -A trust -U postgres" >/dev/null
  # The port can still be held for a moment by a connection of the suite that just ended
  # (TIME-WAIT): try again for up to a minute before giving up.
  local try
  for try in 1 2 3 4 5 6 7 8 9 10 11 12; do
    if su postgres -s /bin/sh -c "$bin/pg_ctl -D $PGDATA -l $PGDATA/server.log -w \
      -o '-c listen_addresses=127.0.0.1 -p 55432 -k $PGDATA -c fsync=off' start" >/dev/null; then
      break
    fi
    [ "$try" = 12 ] && { tail -5 "$PGDATA/server.log" >&2; return 1; }
    sleep 5
  done
  export CITYGATE_TEST_DATABASE_URL="postgresql+asyncpg://postgres@127.0.0.1:55432/postgres"
  PG_BIN="$bin"
  # tests/test_storage_faults.py stops and starts the server under a running gateway
  export CITYGATE_TEST_PGDATA="$PGDATA" CITYGATE_TEST_PG_BIN="$bin"
}

stop_test_postgres() {
  [ -n "${PGDATA:-}" ] || return 0
  su postgres -s /bin/sh -c "$PG_BIN/pg_ctl -D $PGDATA -m fast stop" >/dev/null 2>&1 || true
  rm -rf "$PGDATA"
}
