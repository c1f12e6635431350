#!/usr/bin/env bash
# Starts a throwaway PostgreSQL for oxbridge's tests and prints its URL.
#
#   tests/pg/start.sh [DIR]       # initdb DIR (a new temp dir if omitted) unless it holds a
#                                 # cluster already, start postgres on 127.0.0.1, print:
#                                 #   OXBRIDGE_TEST_PG_URL=postgres://oxbridge@127.0.0.1:PORT/postgres
#                                 #   OXBRIDGE_TEST_PG_DIR=DIR
#   tests/pg/stop.sh DIR          # stop it (immediate shutdown)
#
# Local use:   eval "$(tests/pg/start.sh)"; export OXBRIDGE_TEST_PG_URL; cargo test ...
# The tests do not need that: without OXBRIDGE_TEST_PG_URL they run this script themselves.
#
# PostgreSQL comes from Debian's packages (`apt-get install postgresql`); its binaries live in
# /usr/lib/postgresql/<version>/bin, not on PATH. postgres refuses to run as root, so as
# root the cluster is owned by and run as the `postgres` user (created by the package).
# Authentication is `trust` on 127.0.0.1 only: this cluster is for tests, never for data.
# PGPORT picks the port (a restart keeps the port of the last start); else a free one.
set -euo pipefail

bindir=""
if command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
  bindir="$(dirname "$(command -v pg_ctl)")"
else
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$d/pg_ctl" ] && [ -x "$d/initdb" ]; then bindir="$d"; break; fi
  done
fi
if [ -z "$bindir" ]; then
  echo "start.sh: PostgreSQL binaries not found (apt-get install postgresql)" >&2
  exit 3
fi

dir="${1:-}"
if [ -z "$dir" ]; then
  dir="$(mktemp -d "${TMPDIR:-/tmp}/oxbridge-pg.XXXXXX")"
fi
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"

run_as=()
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
  chown postgres "$dir"
  chmod 700 "$dir"
  # Every ancestor must be traversable by postgres (mktemp dirs are 0700 root).
  p="$(dirname "$dir")"
  while [ "$p" != "/" ]; do
    if ! runuser -u postgres -- test -x "$p"; then chmod o+x "$p"; fi
    p="$(dirname "$p")"
  done
  if command -v runuser >/dev/null 2>&1; then
    run_as=(runuser -u postgres --)
  else
    run_as=(su postgres -s /bin/sh -c)
  fi
fi

as_owner() {
  if [ ${#run_as[@]} -eq 0 ]; then
    "$@"
  elif [ "${run_as[0]}" = runuser ]; then
    "${run_as[@]}" "$@"
  else
    "${run_as[@]}" "$(printf '%q ' "$@")"
  fi
}

data="$dir/data"
if [ ! -f "$data/PG_VERSION" ]; then
  as_owner "$bindir/initdb" -D "$data" -U oxbridge --auth=trust --encoding=UTF8 \
    --no-locale >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
fi

port="${PGPORT:-}"
if [ -z "$port" ] && [ -f "$dir/port" ]; then port="$(cat "$dir/port")"; fi
if [ -z "$port" ]; then
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
fi
echo "$port" >"$dir/port"
chmod 644 "$dir/port"

# fsync stays on: the tests kill replicas mid-refresh and expect committed data to be there.
as_owner "$bindir/pg_ctl" -D "$data" -l "$dir/postgres.log" -w -t 60 \
  -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories='' -c max_connections=200" \
  start >/dev/null || { cat "$dir/postgres.log" >&2; exit 1; }

echo "OXBRIDGE_TEST_PG_URL=postgres://oxbridge@127.0.0.1:$port/postgres"
echo "OXBRIDGE_TEST_PG_DIR=$dir"
