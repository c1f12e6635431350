#!/usr/bin/env bash
# Builds every fuzz target and runs each for SECONDS (default 60) with its protocol's
# dictionary, its committed seeds (seeds/<target>, read-only) and a working corpus
# (corpus/<target>, not committed). Stops at the first crash, leaving the reproducer in
# artifacts/<target>/; turn it into a unit test in the crate, fix, and run again.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# Prints one summary line per target: executions, coverage (edges), features, corpus size.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}
shift || true

command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
cargo +nightly fuzz build

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

dict_for() {
  case "$1" in
    imap_*) echo dict/imap.dict ;;
    pop3_*) echo dict/pop3.dict ;;
    smtp_*) echo dict/smtp.dict ;;
    *) echo "dict/$1.dict" ;;
  esac
}

mkdir -p logs
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target" "seeds/$target"
  log="logs/$target.log"
  if ! cargo +nightly fuzz run "$target" "corpus/$target" "seeds/$target" -- \
      -max_total_time="$seconds" -dict="$(dict_for "$target")" \
      -print_final_stats=1 -close_fd_mask=3 >"$log" 2>&1; then
    echo "fuzz target $target FAILED; see fuzz/$log and fuzz/artifacts/$target/" >&2
    tail -n 40 "$log" >&2
    exit 1
  fi
  execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
  last=$(grep -E '^#[0-9]+' "$log" | tail -n 1)
  cov=$(grep -o 'cov: [0-9]*' <<<"$last" | grep -o '[0-9]*' || echo '?')
  ft=$(grep -o 'ft: [0-9]*' <<<"$last" | grep -o '[0-9]*' || echo '?')
  corp=$(grep -o 'corp: [0-9]*' <<<"$last" | grep -o '[0-9]*' || echo '?')
  printf '%-14s %ss  execs %-10s cov %-6s ft %-7s corpus %s\n' \
    "$target" "$seconds" "$execs" "$cov" "$ft" "$corp"
done
