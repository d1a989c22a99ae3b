#!/usr/bin/env bash
# Makes sure a PostgreSQL answers for the tests and prints the line to use it.
#
#   eval "$(scripts/start-postgres.sh)"      # prints: export DATABASE_URL=...
#   scripts/start-postgres.sh --stop         # stops the cluster this script started
#
# If something already answers at DATABASE_URL (default postgres://postgres@127.0.0.1:5432/test),
# it is used as it is. Otherwise a throw-away cluster is started from the locally installed
# binaries (/usr/lib/postgresql/*/bin, or initdb/pg_ctl on PATH): initdb in a temporary
# directory, trust authentication on 127.0.0.1 only, the first free port from 54329 on, and a
# database `test`. Only the export line goes to stdout (so it can be eval'ed); progress goes to
# stderr. The cluster's directory is recorded in $STATE so --stop finds it.
set -euo pipefail

STATE="${AUDITLEDGER_PG_STATE:-${TMPDIR:-/tmp}/auditledger-postgres.state}"
DEFAULT_URL="postgres://postgres@127.0.0.1:5432/test"
log() { echo "start-postgres: $*" >&2; }

find_bin() {
  local name=$1 dir
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$dir/$name" ]; then echo "$dir/$name"; return 0; fi
  done
  command -v "$name" 2>/dev/null && return 0
  return 1
}

# initdb and postgres refuse to run as root: run them as the `postgres` system user then.
as_owner() {
  if [ "$(id -u)" = 0 ]; then
    if ! id postgres >/dev/null 2>&1; then
      log "running as root and there is no 'postgres' user to run the server as"; exit 1
    fi
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

stop() {
  if [ ! -f "$STATE" ]; then log "no cluster started by this script ($STATE missing)"; return 0; fi
  local dir; dir=$(cat "$STATE")
  local pg_ctl; pg_ctl=$(find_bin pg_ctl) || { log "pg_ctl not found"; exit 1; }
  if [ -d "$dir/data" ]; then
    as_owner "$pg_ctl" -D "$dir/data" -m fast -w stop >&2 || true
  fi
  rm -rf "$dir" "$STATE"
  log "stopped and removed $dir"
}

if [ "${1:-}" = "--stop" ]; then stop; exit 0; fi
if [ -n "${1:-}" ]; then
  echo "usage: $0 [--stop]" >&2; exit 2
fi

URL="${DATABASE_URL:-$DEFAULT_URL}"
pg_isready_bin=$(find_bin pg_isready) || { log "pg_isready not found: install PostgreSQL (apt-get install postgresql)"; exit 1; }
if "$pg_isready_bin" -q -d "$URL" -t 3; then
  log "a PostgreSQL already answers at the given DATABASE_URL; using it"
  printf 'export DATABASE_URL=%q\n' "$URL"
  exit 0
fi
if [ -f "$STATE" ] && [ -d "$(cat "$STATE")/data" ]; then
  log "a cluster started earlier by this script is recorded in $STATE; stopping it first"
  stop
fi

initdb=$(find_bin initdb) || { log "initdb not found: install PostgreSQL (apt-get install postgresql)"; exit 1; }
pg_ctl=$(find_bin pg_ctl) || { log "pg_ctl not found"; exit 1; }
bindir=$(dirname "$initdb")

port=54329
while "$pg_isready_bin" -q -h 127.0.0.1 -p "$port" -t 1 || (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
  port=$((port + 1))
done

dir=$(mktemp -d "${TMPDIR:-/tmp}/auditledger-pg.XXXXXX")
chmod 755 "$dir"
[ "$(id -u)" = 0 ] && chown postgres "$dir"
echo "$dir" > "$STATE"
log "initdb in $dir/data (PostgreSQL from $bindir)"
as_owner "$initdb" -D "$dir/data" -U postgres --auth=trust --encoding=UTF8 --no-locale >"$dir/initdb.log" 2>&1 \
  || { cat "$dir/initdb.log" >&2; exit 1; }
log "starting on 127.0.0.1:$port"
as_owner "$pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
  -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir -c max_connections=200" start >&2 \
  || { cat "$dir/server.log" >&2; exit 1; }
as_owner "$bindir/createdb" -h 127.0.0.1 -p "$port" -U postgres test
log "ready; stop it with: $0 --stop"
printf 'export DATABASE_URL=%q\n' "postgres://postgres@127.0.0.1:$port/test"
