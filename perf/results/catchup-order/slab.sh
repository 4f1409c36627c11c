#!/bin/bash
# Produce A, produce B (READ_B=1: read B too); stop, drop_caches DROP (1, 2 or 3), start,
# wait WAIT s; read A.
source "$(dirname "$0")/common.sh"
start
prod a >/dev/null
prod b >/dev/null
[ -n "${READ_B:-}" ] && echo "b first: $(cons b)"
stop
sync; echo "${DROP:-3}" > /proc/sys/vm/drop_caches
start
sleep "${WAIT:-0}"
echo "a after restart + drop ${DROP:-3}: $(cons a)"
stop
rm -rf "$D"
