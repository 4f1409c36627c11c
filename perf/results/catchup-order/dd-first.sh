#!/bin/bash
# Is the slow read right after producing in the broker or below it? Produce three
# topics; WAIT seconds later (default 0), read one with a buffered `dd` of its segment
# files (no broker involved), then one through the broker; then restart with
# drop_caches and read the third through the broker.
#   WAIT=60 bash dd-first.sh     # does it depend on time since the writes? (it does not)
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
start
for t in A B C; do prod $t; done
sleep "${WAIT:-0}"
sync; echo 3 > /proc/sys/vm/drop_caches
echo "dd of A ${WAIT:-0} s after producing: $(cat $D/A-*/*.log | dd of=/dev/null bs=1M 2>&1 | tail -1)"
echo "broker read of B right after: $(cons B)"
stop; sync; echo 3 > /proc/sys/vm/drop_caches; start
echo "broker read of C after restart and drop_caches: $(cons C)"
stop
