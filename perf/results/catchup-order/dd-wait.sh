#!/bin/bash
# The same as dd-first.sh, with WAIT seconds (default 60) of nothing between producing
# and the first read: does the slow first read depend on time since the writes?
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
start
for t in A B C; do prod $t; done
sleep "${WAIT:-60}"
sync; echo 3 > /proc/sys/vm/drop_caches
echo "dd of A ${WAIT:-60} s after producing: $(cat $D/A-*/*.log | dd of=/dev/null bs=1M 2>&1 | tail -1)"
echo "broker read of B right after it: $(cons B)"
stop; sync; echo 3 > /proc/sys/vm/drop_caches; start
echo "broker read of C after restart and drop_caches: $(cons C)"
stop
