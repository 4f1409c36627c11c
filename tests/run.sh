#!/usr/bin/env bash
# The project's single test command (README "Test"); CI runs exactly this.
#
# 1. cargo: every unit, property, integration and crash test, and every benchmark once in
#    test mode. Tests start glommio executors with small io_uring buffer pools so they fit
#    the common 8 MiB locked-memory limit.
# 2. Real Kafka clients against the real `tern` binary (release build): a Python venv in
#    .venv with the pinned clients of tests/clients/requirements.txt (librdkafka via
#    confluent-kafka, kafka-python), kafkajs from npm (tests/clients/js), plus kcat when
#    it is installed.
# Ends with one summary line over both.
set -uo pipefail
cd "$(dirname "$0")/.."
ulimit -l unlimited 2>/dev/null || true
echo "locked-memory limit: $(ulimit -l) KiB; $(nproc) cpus"
export TERN_CRASH_ROUNDS=${TERN_CRASH_ROUNDS:-20}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0

cargo test --all-targets --no-fail-fast 2>&1 | tee "$log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== building the release binary for client tests"
cargo build --release --bin tern || status=1

echo "== host settings (tern tune --check, read-only; differences are reported, not failures)"
target/release/tern tune --check --cores 0 --data-dir target || true

echo "== python venv with pinned Kafka clients"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv || status=1
fi
.venv/bin/pip install --quiet --disable-pip-version-check -r tests/clients/requirements.txt || status=1
# quixstreams declares confluent-kafka<2.13 (pinned 2.16.1 above): its locked closure, without deps.
.venv/bin/pip install --quiet --disable-pip-version-check --no-deps -r tests/clients/requirements-quix.txt || status=1
echo "== node Kafka client (kafkajs, pinned by tests/clients/js/package-lock.json)"
if command -v npm >/dev/null 2>&1; then
  (cd tests/clients/js && npm ci --silent --no-audit --no-fund) || status=1
else
  echo "!!!! WARNING: npm is not installed: the kafkajs tests are SKIPPED, not passed"
fi
if ! command -v kcat >/dev/null 2>&1 && ! command -v kafkacat >/dev/null 2>&1; then
  echo "!!!! WARNING: kcat is not installed: the kcat tests are SKIPPED, not passed (apt-get install kcat)"
fi

.venv/bin/python -m pytest -q -rs tests/clients 2>&1 | tee -a "$log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

awk '
  /^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
  /(passed|failed|skipped|error).* in [0-9.]+s/ && !/^test result:/ {
    for (i = 1; i <= NF; i++) { w = $(i+1); gsub(/[,=]/, "", w); if (w == "passed") p += $i; if (w == "failed" || w == "errors" || w == "error") f += $i; if (w == "skipped") s += $i }
  }
  END { printf "total: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
