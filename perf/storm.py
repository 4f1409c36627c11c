#!/usr/bin/env python3
"""Connection storm beside a well-behaved producer (issue 19): N processes open TCP
connections to the broker and reset them (SO_LINGER 0) as fast as they can, while
`tern bench produce` runs a fixed-rate durable load; reports connects/s, the producer's
latency percentiles, and the broker's event-loop stalls and lag from /metrics.

Usage: perf/storm.py --tern target/release/tern --port 19092 --admin-port 19644 [--storm-procs 3]
The broker must already run (perf/storm.sh starts one)."""
import argparse
import json
import multiprocessing
import socket
import struct
import subprocess
import time
import urllib.request


def storm(port, seconds, counter):
    deadline = time.time() + seconds
    n = 0
    while time.time() < deadline:
        try:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.connect(("127.0.0.1", port))
            s.close()  # RST
            n += 1
        except OSError:
            time.sleep(0.001)
    with counter.get_lock():
        counter.value += n


def metric(port, name):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.split()[-1])
    return total


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tern", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--admin-port", type=int, required=True)
    parser.add_argument("--storm-procs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rate", type=int, default=10000)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    results = {}
    for phase in ("quiet", "storm"):
        stalls_before = metric(args.admin_port, "tern_event_loop_stalls_total")
        counter = multiprocessing.Value("l", 0)
        procs = []
        if phase == "storm":
            procs = [multiprocessing.Process(target=storm, args=(args.port, args.seconds + 3, counter))
                     for _ in range(args.storm_procs)]
            for p in procs:
                p.start()
        bench = subprocess.run(
            [args.tern, "bench", "produce", "--brokers", f"127.0.0.1:{args.port}", "--topic", f"storm-{phase}",
             "--partitions", "4", "--record-size", "100", "--acks", "all", "--rate", str(args.rate),
             "--linger-ms", "5", "--duration", f"{args.seconds}s", "--warmup", "1s",
             "--json", f"{args.out}/{phase}.json"], capture_output=True, text=True, check=True)
        for p in procs:
            p.join()
        latency = json.load(open(f"{args.out}/{phase}.json"))["produce"]["latency"]
        results[phase] = {
            "connects_per_sec": counter.value / (args.seconds + 3),
            "stalls": metric(args.admin_port, "tern_event_loop_stalls_total") - stalls_before,
            **latency,
        }
        print(phase, json.dumps(results[phase]))
    json.dump(results, open(f"{args.out}/storm.json", "w"), indent=1)


if __name__ == "__main__":
    main()
