#!/bin/bash
# idle.sh (from the project root, as root): a fresh broker on CPU 0, 100 partitions, 10 idle clients; its CPU ticks over three 10-s windows
D=$(mktemp -d -p target)
taskset -c 0 "${BIN:-target/release/tern}" serve --listen 127.0.0.1:19092 --admin-listen 127.0.0.1:19644 --data-dir $D/b --cores 0 --memory 2M > $D/log 2>&1 & P=$!
sleep 2
"${BIN:-target/release/tern}" topic create idle --partitions 100 --brokers 127.0.0.1:19092 >/dev/null
python3 - 19092 $P <<'PY'
import os, socket, struct, sys, time
port, pid = int(sys.argv[1]), int(sys.argv[2])
clients = []
for i in range(10):
    s = socket.create_connection(("127.0.0.1", port))
    body = struct.pack(">hhih", 18, 0, i, 4) + b"idle"
    s.sendall(struct.pack(">i", len(body)) + body); s.recv(65536); clients.append(s)
time.sleep(2)
ticks = lambda: sum(int(x) for x in open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[11:13])
out = []
for _ in range(3):
    b = ticks(); time.sleep(10); out.append(ticks() - b)
print("ticks per 10 s:", out)
PY
kill $P; wait $P; rm -rf $D
