#!/usr/bin/env bash
# The project's single test command (README "Test"); CI runs exactly this.
#
# Runs every unit, property, integration and crash test, and every benchmark once in test
# mode, then prints one summary line. Tests start glommio executors with small io_uring
# buffer pools so they fit the default locked-memory limit (8 MiB); raising it is
# attempted but not required.
set -uo pipefail
cd "$(dirname "$0")/.."
ulimit -l unlimited 2>/dev/null || true
echo "locked-memory limit: $(ulimit -l) KiB; $(nproc) cpus"
export TERN_CRASH_ROUNDS=${TERN_CRASH_ROUNDS:-20}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --all-targets --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     END { printf "total: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
