#!/bin/bash
# Produce R, produce F; read F right away (PAUSE=s waits first, RESTART_FRESH=1 restarts
# the broker first); stop, drop_caches, start; read R (the latency suite's order).
source "$(dirname "$0")/common.sh"
start
prod restart >/dev/null
prod fresh >/dev/null
sleep "${PAUSE:-0}"
if [ -n "${RESTART_FRESH:-}" ]; then stop; start; fi
echo "fresh: $(cons fresh)"
stop
sync; echo 3 > /proc/sys/vm/drop_caches
start
echo "restart: $(cons restart)"
stop
rm -rf "$D"
