#!/bin/bash
# The cause of the slow first read: this VM's balloon reports free guest memory to the
# host (virtio-balloon free page reporting), which takes the pages back; the page cache a
# read fills is then backed anew by the host, page by page, while the reads wait.
# For each mode: produce A and B, read A through the broker right after producing, then
# restart with drop_caches and read B.
#   on:  reporting as the VM boots (page_reporting_order 9)
#   off: reporting off (order 11, above the largest order) and 12 GiB touched and freed
#        first, so the page cache lands on memory the host still backs
# Prints each read's time and the KiB reported to the host during it; restores the setting.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
P=/sys/module/page_reporting/parameters
original=$(cat $P/page_reporting_order)
trap 'echo "$original" > $P/page_reporting_order' EXIT
timed_read() { # label topic
  local r0 t0 t1
  r0=$(cat $P/reported_kib)
  t0=$(date +%s.%N)
  cons "$2" >/dev/null
  t1=$(date +%s.%N)
  echo "$1: $(python3 -c "print(f'{$t1 - $t0:.2f} s')"), reported to the host meanwhile $(( $(cat $P/reported_kib) - r0 )) KiB"
}
for mode in ${MODES:-on off on off}; do
  rm -rf "$D"; mkdir -p "$D"
  if [ "$mode" = off ]; then
    echo 11 > $P/page_reporting_order
    python3 -c "b = b'\x01' * (12 << 30); del b"
  else
    echo "$original" > $P/page_reporting_order
    sleep 5  # let the freed memory be reported
  fi
  start
  for t in A B; do prod $t >/dev/null; done
  timed_read "reporting $mode, read A right after producing" A
  stop; sync; echo 3 > /proc/sys/vm/drop_caches; start
  timed_read "reporting $mode, read B after restart and drop_caches" B
  stop
done
