#!/usr/bin/env bash
# Stops a PostgreSQL started by tests/pg/start.sh DIR (immediate shutdown, like a crash);
# `tests/pg/start.sh DIR` starts it again on the same port with its data.
set -euo pipefail
dir="${1:?usage: stop.sh DIR}"
bindir=""
if command -v pg_ctl >/dev/null 2>&1; then
  bindir="$(dirname "$(command -v pg_ctl)")"
else
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$d/pg_ctl" ]; then bindir="$d"; break; fi
  done
fi
[ -n "$bindir" ] || { echo "stop.sh: pg_ctl not found" >&2; exit 3; }
mode="${PG_STOP_MODE:-immediate}"
if [ "$(id -u)" = 0 ]; then
  runuser -u postgres -- "$bindir/pg_ctl" -D "$dir/data" -m "$mode" -w stop >/dev/null
else
  "$bindir/pg_ctl" -D "$dir/data" -m "$mode" -w stop >/dev/null
fi
