#!/usr/bin/env bash
# Entrypoint of the local postgres:16 stand-in (scripts/docker-standins.sh), keeping the official
# image's contract: on an empty PGDATA, initdb (UTF8) with POSTGRES_USER/POSTGRES_PASSWORD,
# create POSTGRES_DB, run /docker-entrypoint-initdb.d/*.sh and *.sql, then serve on 5432.
set -euo pipefail
if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA" /var/run/postgresql
  chown -R postgres:postgres "$PGDATA" /var/run/postgresql
  chmod 0700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi
export POSTGRES_USER=${POSTGRES_USER:-postgres} POSTGRES_DB=${POSTGRES_DB:-${POSTGRES_USER:-postgres}}
if [ "${1:-postgres}" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
  : "${POSTGRES_PASSWORD:?the postgres stand-in, like the official image, needs POSTGRES_PASSWORD}"
  initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
    --encoding=UTF8 --locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256 -D "$PGDATA" >/dev/null
  printf "host all all all scram-sha-256\n" >>"$PGDATA/pg_hba.conf"
  pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -k /var/run/postgresql" -w start >/dev/null
  if [ "$POSTGRES_DB" != postgres ]; then
    psql -v ON_ERROR_STOP=1 -h /var/run/postgresql -U "$POSTGRES_USER" -d postgres \
      -c "CREATE DATABASE \"$POSTGRES_DB\"" >/dev/null
  fi
  export PGHOST=/var/run/postgresql PGUSER=$POSTGRES_USER
  for f in /docker-entrypoint-initdb.d/*; do
    case "$f" in
      *.sh) echo "stand-in entrypoint: running $f"; bash "$f" ;;
      *.sql) echo "stand-in entrypoint: running $f"; psql -v ON_ERROR_STOP=1 -d "$POSTGRES_DB" -f "$f" ;;
    esac
  done
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  echo "stand-in entrypoint: PostgreSQL init process complete; ready for start up."
fi
if [ "${1:-postgres}" = postgres ]; then
  shift || true
  # The official image stops PostgreSQL with SIGINT (a fast shutdown, no waiting on clients);
  # an imported image cannot declare a stop signal, so Docker's SIGTERM is passed on as SIGINT.
  postgres -c listen_addresses='*' -c unix_socket_directories=/var/run/postgresql "$@" &
  pid=$!
  trap 'kill -INT "$pid"' TERM INT
  set +e
  wait "$pid"; status=$?
  # A trapped signal ends the first wait early: wait again for PostgreSQL's own exit.
  while kill -0 "$pid" 2>/dev/null; do wait "$pid"; status=$?; done
  exit "$status"
fi
exec "$@"
