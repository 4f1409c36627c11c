#!/usr/bin/env python3
"""Connection storm beside a well-behaved producer (issue 19): N processes open TCP
connections to the broker and reset them (SO_LINGER 0) as fast as they can, while
`tern bench produce` runs a fixed-rate durable load; reports connects/s, the producer's
latency percentiles, and the broker's event-loop stalls and lag from /metrics.

Usage: perf/storm.py --tern target/release/tern --port 19092 --admin-port 19644 [--storm-procs 3]
The broker must already run (perf/storm.sh starts one)."""
import argparse
import json
import os
import multiprocessing
import socket
import struct
import subprocess
import time
import urllib.request


def storm(port, seconds, counter, nice):
    # The storm shares a CPU with the well-behaved client here (2 cores: the broker has
    # the other); at a lower priority it stands in for clients on other machines.
    os.nice(nice)
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


def buckets(port, name):
    """Cumulative bucket counts of a histogram, summed over shards: {le: count}."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    counts = {}
    for line in text.splitlines():
        if line.startswith(name + "_bucket{"):
            le = line.split('le="')[1].split('"')[0]
            bound = float("inf") if le == "+Inf" else float(le)
            counts[bound] = counts.get(bound, 0) + float(line.split()[-1])
    return counts


def quantile_ms(before, after, q):
    """The upper bucket bound (ms) holding quantile q of the observations between two scrapes."""
    deltas = sorted((bound, after[bound] - before.get(bound, 0)) for bound in after)
    total = deltas[-1][1] if deltas else 0
    if total <= 0:
        return None
    for bound, count in deltas:
        if count >= q * total:
            return bound * 1000
    return None


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
    parser.add_argument("--storm-nice", type=int, default=0,
                        help="niceness of the storm processes (19: the client's CPU goes to the client first)")
    parser.add_argument("--load-cpus", default=None,
                        help="CPUs for the load tool (taskset -c), e.g. 0 to keep it off the storm's CPU")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    results = {}
    for phase in ("quiet", "storm"):
        stalls_before = metric(args.admin_port, "tern_event_loop_stalls_total")
        server_before = buckets(args.admin_port, "tern_produce_latency_seconds")
        lag_before = buckets(args.admin_port, "tern_event_loop_lag_seconds")
        counter = multiprocessing.Value("l", 0)
        procs = []
        if phase == "storm":
            procs = [multiprocessing.Process(target=storm, args=(args.port, args.seconds + 3, counter, args.storm_nice))
                     for _ in range(args.storm_procs)]
            for p in procs:
                p.start()
        pin = ["taskset", "-c", args.load_cpus] if args.load_cpus else []
        subprocess.run(
            pin + [args.tern, "bench", "produce", "--brokers", f"127.0.0.1:{args.port}", "--topic", f"storm-{phase}",
             "--partitions", "4", "--record-size", "100", "--acks", "all", "--rate", str(args.rate),
             "--linger-ms", "5", "--duration", f"{args.seconds}s", "--warmup", "1s",
             "--json", f"{args.out}/{phase}.json"], capture_output=True, text=True, check=True)
        for p in procs:
            p.join()
        latency = json.load(open(f"{args.out}/{phase}.json"))["produce"]["latency"]
        server_after = buckets(args.admin_port, "tern_produce_latency_seconds")
        lag_after = buckets(args.admin_port, "tern_event_loop_lag_seconds")
        results[phase] = {
            "connects_per_sec": counter.value / (args.seconds + 3),
            "stalls": metric(args.admin_port, "tern_event_loop_stalls_total") - stalls_before,
            # Broker side: produce request in to response out, and the watchdog's lateness
            # (bucket upper bounds, so "at most").
            "broker_produce_p99_ms_at_most": quantile_ms(server_before, server_after, 0.99),
            "broker_produce_p999_ms_at_most": quantile_ms(server_before, server_after, 0.999),
            "event_loop_lag_p99_ms_at_most": quantile_ms(lag_before, lag_after, 0.99),
            "event_loop_lag_max_ms_at_most": quantile_ms(lag_before, lag_after, 1.0),
            **latency,
        }
        print(phase, json.dumps(results[phase]))
    json.dump(results, open(f"{args.out}/storm.json", "w"), indent=1)


if __name__ == "__main__":
    main()
