# Shared by perf/suite.sh and perf/latency.sh (sourced, not run): the settings every
# suite takes from the environment, and stopping the broker and removing its data.
#   BROKER_CORES (0) LOAD_CORES (1) DURATION (10 s) WARMUP (2 s) RUNS (3) PORT (19092)
#   BROKER_BIN (this tree's build) KEEP_DATA (0: the data dir is removed at exit)

broker_cores=${BROKER_CORES:-0}
load_cores=${LOAD_CORES:-1}
duration=${DURATION:-10}
warmup=${WARMUP:-2}
runs=${RUNS:-3}
port=${PORT:-19092}
tern=$PWD/target/release/tern
# The broker under test (default: this tree's); the load tool is always this tree's, so
# two broker builds can be compared with the same client.
broker_bin=${BROKER_BIN:-$tern}

mkdir -p "$out"
cargo build --release --quiet
# glommio registers its io_uring buffers as locked memory.
ulimit -l unlimited 2>/dev/null || ulimit -l "$(ulimit -Hl)" 2>/dev/null || true

broker_pid=""
stop_broker() {
  if [ -n "$broker_pid" ] && kill -0 "$broker_pid" 2>/dev/null; then
    kill -TERM "$broker_pid"
    wait "$broker_pid" || true
  fi
  broker_pid=""
}

# Waits until the broker just started accepts connections on $port (at most 60 s).
wait_for_broker() {
  for _ in $(seq 600); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "broker did not start; see $out/broker.log" >&2
  exit 1
}

# The scenarios write tens of GB: remove the data when done (KEEP_DATA=1 keeps it).
cleanup() {
  stop_broker
  [ "${KEEP_DATA:-0}" = 1 ] || rm -rf "$data_dir"
}
trap cleanup EXIT
