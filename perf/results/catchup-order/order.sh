#!/bin/bash
# drop_caches, produce A, produce B; read A, read B, read A again (no restart).
source "$(dirname "$0")/common.sh"
sync; echo 3 > /proc/sys/vm/drop_caches
start
prod a >/dev/null
prod b >/dev/null
echo "a (older): $(cons a)"
echo "b (newer): $(cons b)"
echo "a again: $(cons a)"
stop
rm -rf "$D"
