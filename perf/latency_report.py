#!/usr/bin/env python3
"""Summarises a perf/latency.sh result folder (medians over runs) as the Markdown tables
of perf/README.md, plus summary.json.

    python3 perf/latency_report.py perf/results/latency-<time>
    python3 perf/latency_report.py --pattern BEFORE.metrics AFTER.metrics CPU.json
        prints "<write bytes> <bytes per second>": the broker's write pattern during a
        scenario (average write round rounded up to 4 KiB, bytes received per second),
        which latency.sh replays on the raw disk.

Per-stage latencies come from the broker's Prometheus histograms (the difference between
the scrapes before and after a scenario); a quantile is interpolated inside its bucket,
so it is as coarse as the buckets (10, 25, 50, 100, 250, 500 µs, 1, 2.5, 5, 10 ms ...).
"""

import json
import math
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

STAGES = [
    ("tern_log_queue_wait_seconds", "queue"),
    ("tern_log_write_seconds", "write"),
    ("tern_log_sync_wait_seconds", "sync wait"),
    ("tern_fsync_latency_seconds", "fdatasync"),
    ("tern_produce_response_write_seconds", "response"),
    ("tern_produce_latency_seconds", "request"),
]
SHARES = [10, 25, 50, 75]


def parse_metrics(path: Path) -> dict:
    """{(name, labels-without-le): value} and buckets {(name): {le: value}} summed over shards."""
    values, buckets = defaultdict(float), defaultdict(lambda: defaultdict(float))
    if not path.exists():
        return {"values": values, "buckets": buckets}
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        match = re.match(r"([a-zA-Z_:]+)(\{[^}]*\})?\s+(\S+)", line)
        if not match:
            continue
        name, labels, value = match.group(1), match.group(2) or "", float(match.group(3))
        le = re.search(r'le="([^"]+)"', labels)
        if name.endswith("_bucket") and le:
            buckets[name[: -len("_bucket")]][float(le.group(1))] += value
        else:
            api = re.search(r'api="([^"]+)"', labels)
            values[(name, api.group(1) if api else "")] += value
    return {"values": values, "buckets": buckets}


def delta(before: dict, after: dict):
    values = {k: after["values"][k] - before["values"].get(k, 0.0) for k in after["values"]}
    buckets = {
        name: {le: count - before["buckets"].get(name, {}).get(le, 0.0) for le, count in per_le.items()}
        for name, per_le in after["buckets"].items()
    }
    return values, buckets


def quantile(cumulative: dict, q: float):
    bounds = sorted(cumulative)
    total = cumulative[bounds[-1]] if bounds else 0
    if total <= 0:
        return None
    target, low, below = q * total, 0.0, 0.0
    for bound in bounds:
        count = cumulative[bound]
        if count >= target:
            if math.isinf(bound):
                return low * 1e3
            inside = count - below
            fraction = (target - below) / inside if inside else 1.0
            return (low + (bound - low) * fraction) * 1e3
        low, below = bound, count
    return None


def pattern(before: Path, after: Path, cpu: Path) -> str:
    values, _ = delta(parse_metrics(before), parse_metrics(after))
    rounds = values.get(("tern_log_write_seconds_count", ""), 0.0)
    received = values.get(("tern_bytes_received_total", ""), 0.0)
    # The scrapes bracket the whole bench (warmup and topic setup included): rates are
    # over that window.
    window = json.loads(cpu.read_text())["seconds"]
    write = max(4096, int(math.ceil(received / max(rounds, 1) / 4096) * 4096))
    return f"{write} {received / max(window, 1e-9):.0f}"


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, digits=2):
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def load(folder: Path):
    runs = defaultdict(list)
    for path in sorted(folder.glob("*.run*.json")):
        if path.name.endswith(".cpu.json"):
            continue
        name, run = re.match(r"(.+)\.run(\d+)\.json$", path.name).groups()
        entry = {"bench": json.loads(path.read_text())}
        cpu = folder / f"{name}.run{run}.cpu.json"
        if cpu.exists():
            facts = json.loads(cpu.read_text())
            entry["cpu"] = facts["cpu_percent"]
            entry["load_cpu"] = facts.get("load_cpu_percent")
            entry["kworker_cpu"] = facts.get("kworker_cpu_percent")
            entry["load_core_busy"] = facts.get("load_core_busy_percent")
            entry["seconds"] = facts.get("seconds")
        before, after = folder / f"{name}.run{run}.before.metrics", folder / f"{name}.run{run}.after.metrics"
        if after.exists():
            values, buckets = delta(parse_metrics(before), parse_metrics(after))
            entry["stages"] = {
                label: {"p50": quantile(buckets.get(metric, {}), 0.5), "p99": quantile(buckets.get(metric, {}), 0.99),
                        "count": buckets.get(metric, {}).get(math.inf, 0)}
                for metric, label in STAGES
            }
            entry["requests"] = values.get(("tern_requests_total", "Produce"), 0.0)
        runs[name].append(entry)
    return runs


def row(runs, name):
    entries = runs.get(name, [])
    produce = [e["bench"].get("produce") or {} for e in entries]
    latency = [p.get("latency") or {} for p in produce]
    e2e = [e["bench"].get("e2e") or {} for e in entries]
    rate = med([p.get("records_per_sec") for p in produce])
    cpu = med([e.get("cpu") for e in entries])
    return {
        "scenario": name, "runs": len(entries), "records_per_sec": rate,
        "runs_records_per_sec": [round(p.get("records_per_sec") or 0) for p in produce],
        "p50": med([l.get("p50_ms") for l in latency]), "p99": med([l.get("p99_ms") for l in latency]),
        "p999": med([l.get("p999_ms") for l in latency]), "max": med([l.get("max_ms") for l in latency]),
        "e2e_p99": med([l.get("p99_ms") for l in e2e]), "cpu": cpu,
        "request_rtt_p99": med([((e["bench"].get("produce_requests") or {}).get("round_trip") or {}).get("p99_ms")
                                for e in entries]),
        "request_rtt_p999": med([((e["bench"].get("produce_requests") or {}).get("round_trip") or {}).get("p999_ms")
                                 for e in entries]),
        "load_cpu": med([e.get("load_cpu") for e in entries]),
        "kworker_cpu": med([e.get("kworker_cpu") for e in entries]),
        "load_core_busy": med([e.get("load_core_busy") for e in entries]),
        # Requests counted between the scrapes, over the wall time between them.
        "requests_per_sec": med([e["requests"] / e["seconds"] for e in entries if e.get("requests") and e.get("seconds")]),
        "cpu_s_per_m": cpu / 100 / rate * 1e6 if cpu is not None and rate else None,
        "errors": sum(sum((e["bench"].get("errors") or {}).values()) for e in entries),
        "stages": {label: {q: med([(e.get("stages") or {}).get(label, {}).get(q) for e in entries]) for q in ("p50", "p99")}
                   for _, label in STAGES},
    }


def disk_row(folder: Path, share: int | str, mode: str):
    entries = [json.loads(p.read_text()) for p in sorted(folder.glob(f"disk-{share}-{mode}.run*.json"))]
    if not entries:
        return None
    return {k: med([e.get(k) for e in entries]) for k in ("p50", "p99", "p999", "max", "write_bytes", "achieved_mb_s",
                                                          "cpu_us_per_write")}


def report(folder: Path):
    runs = load(folder)
    machine = json.loads((folder / "machine.json").read_text()) if (folder / "machine.json").exists() else {}
    lines = []
    if machine:
        lines += [f"Machine: {machine['nproc']} CPUs ({machine['cpu_model']}), {machine['memory_gib']} GiB, kernel "
                  f"{machine['kernel']}, {machine['data_dir_fs']}; {machine['date']}. dd O_DIRECT "
                  f"{machine['dd_direct_mib_s']:.0f} MiB/s.", ""]
    peak = row(runs, "peak")
    relaxed_peak = row(runs, "relaxed-peak")
    lines += [f"Peak (16 KiB batches, 2 producers, 8 partitions): durable {fmt(peak['records_per_sec'])} records/s "
              f"(runs {peak['runs_records_per_sec']}), p99 {fmt(peak['p99'])} ms, broker CPU {fmt(peak['cpu'], 0)}%; "
              f"relaxed {fmt(relaxed_peak['records_per_sec'])} records/s (runs {relaxed_peak['runs_records_per_sec']}).", ""]
    lines += ["| share of peak | records/s | produce p50 | p99 | p99.9 | max | e2e p99 | in-broker request p99 | raw disk p99 / p99.9 (fdatasync) | "
              "raw disk p99 / p99.9 (O_DSYNC) | p99 ratio Tern/disk (fdatasync / O_DSYNC) | disk write, bytes | broker CPU | load-tool CPU | load core busy | "
              "CPU s per M records | relaxed p99 | relaxed CPU |",
              "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    summary = {"peak": peak, "relaxed_peak": relaxed_peak, "shares": {}}
    for share in SHARES:
        r, relaxed = row(runs, f"e2e-{share}"), row(runs, f"relaxed-e2e-{share}")
        fd, ds = disk_row(folder, share, "fdatasync"), disk_row(folder, share, "dsync")
        ratio = lambda d: r["p99"] / d["p99"] if d and r["p99"] and d["p99"] else None
        lines.append(
            f"| {share}% | {fmt(r['records_per_sec'])} | {fmt(r['p50'])} | {fmt(r['p99'])} | {fmt(r['p999'])} | "
            f"{fmt(r['max'])} | {fmt(r['e2e_p99'])} | {fmt(r['stages']['request']['p99'])} | "
            f"{fmt(fd and fd['p99'])} / {fmt(fd and fd['p999'])} | {fmt(ds and ds['p99'])} / {fmt(ds and ds['p999'])} | "
            f"{fmt(ratio(fd))} / {fmt(ratio(ds))} | {fmt(fd and fd['write_bytes'], 0)} | {fmt(r['cpu'], 0)}% | "
            f"{fmt(r['load_cpu'], 0)}% | {fmt(r['load_core_busy'], 0)}% | {fmt(r['cpu_s_per_m'])} | {fmt(relaxed['p99'])} | {fmt(relaxed['cpu'], 0)}% |")
        summary["shares"][share] = {"durable": r, "relaxed": relaxed, "disk_fdatasync": fd, "disk_dsync": ds}
    lines += ["", "CPU at 100 k records/s of 100 bytes (10 MB/s), 2 producers, 8 partitions:", "",
              "| mode | linger.ms | produce requests/s | broker CPU | CPU µs per request | kernel workers (kworker) CPU | produce p50 | p99 |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for mode, prefix in [("durable", "cpu100k"), ("relaxed", "relaxed-cpu100k")]:
        for linger in (0, 5):
            r = row(runs, f"{prefix}-l{linger}")
            if not r["runs"]:
                continue
            per_request = r["cpu"] / 100 / r["requests_per_sec"] * 1e6 if r["cpu"] and r["requests_per_sec"] else None
            kworker = f"{fmt(r['kworker_cpu'], 1)}%" if r["kworker_cpu"] is not None else "-"
            lines.append(f"| {mode} | {linger} | {fmt(r['requests_per_sec'])} | {fmt(r['cpu'], 1)}% | {fmt(per_request, 0)} | "
                         f"{kworker} | {fmt(r['p50'])} | {fmt(r['p99'])} |")
            summary.setdefault("cpu100k", {})[f"{mode}-l{linger}"] = r
    lines += ["", "Per-stage latency inside the broker (medians over runs of each scenario's p50 / p99, ms, "
              "interpolated in the histogram buckets):", "",
              "| scenario | " + " | ".join(label for _, label in STAGES) + " |",
              "| --- |" + " ---: |" * len(STAGES)]
    for name in ["peak"] + [f"e2e-{s}" for s in SHARES] + ["cpu100k-l0", "cpu100k-l5", "catchup-alone", "catchup-during"]:
        r = row(runs, name)
        if not r["runs"]:
            continue
        cells = [f"{fmt(r['stages'][label]['p50'], 3)} / {fmt(r['stages'][label]['p99'], 3)}" for _, label in STAGES]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    alone, during = row(runs, "catchup-alone"), row(runs, "catchup-during")
    read, fresh = row_consume(runs, "catchup-read"), row_consume(runs, "catchup-read-fresh")
    first, during_read = row_consume(runs, "catchup-read-first"), row_consume(runs, "catchup-during-read")
    dd = dd_buffered(folder)
    in_alone, in_during = alone["stages"]["request"]["p99"], during["stages"]["request"]["p99"]
    write_alone, write_during = alone["stages"]["write"]["p99"], during["stages"]["write"]["p99"]
    lines += ["", f"Catch-up: produce at 10% of peak alone p99 {fmt(alone['p99'])} ms, while one consumer reads 1 KiB "
              f"records from cold disk p99 {fmt(during['p99'])} ms (ratio "
              f"{fmt(during['p99'] / alone['p99'] if alone['p99'] and during['p99'] else None)}; load-tool CPU "
              f"{fmt(alone['load_cpu'], 0)}% alone, {fmt(during['load_cpu'], 0)}% during; broker CPU "
              f"{fmt(alone['cpu'], 0)}% alone, {fmt(during['cpu'], 0)}% during). Inside the broker: request p99 "
              f"{fmt(in_alone)} ms alone, {fmt(in_during)} ms during (ratio "
              f"{fmt(in_during / in_alone if in_alone and in_during else None)}), write stage p99 {fmt(write_alone)} "
              f"against {fmt(write_during)} ms. The reader during produce: {fmt(during_read)} MB/s (the cold-read "
              f"budget). One consumer alone: {fmt(read)} MB/s after a restart and drop_caches, {fmt(fresh)} MB/s "
              f"right after producing, {fmt(first)} MB/s for the first read after producing; buffered dd of another "
              f"such topic after drop_caches {fmt(dd)} MB/s (ratio {fmt(read / dd if read and dd else None)}; "
              f"every read is the first read of its files)."]
    disk_alone, disk_reader = disk_row(folder, "catchup-alone", "dsync"), disk_row(folder, "catchup-reader", "dsync")
    if disk_alone and disk_reader:
        ratio = lambda a, b: a / b if a and b else None
        lines += ["", f"Raw disk with the broker's write pattern during the catch-up (O_DSYNC, 8 files, "
                  f"{fmt(disk_reader['write_bytes'], 0)}-byte writes): p99 {fmt(disk_alone['p99'])} ms alone, "
                  f"{fmt(disk_reader['p99'])} ms beside a reader paced as Tern paces one (ratio "
                  f"{fmt(ratio(disk_reader['p99'], disk_alone['p99']))}); p99.9 {fmt(disk_alone['p999'])} against "
                  f"{fmt(disk_reader['p999'])} ms. Tern during the catch-up against the disk beside the reader: p99 "
                  f"ratio {fmt(ratio(during['p99'], disk_reader['p99']))}. Produce requests as the client saw them "
                  f"(round trip p99 / p99.9, ms): {fmt(alone['request_rtt_p99'])} / {fmt(alone['request_rtt_p999'])} "
                  f"alone, {fmt(during['request_rtt_p99'])} / {fmt(during['request_rtt_p999'])} during."]
    summary.update({"disk_catchup_alone": disk_alone, "disk_catchup_reader": disk_reader})
    summary.update({"catchup_alone": alone, "catchup_during": during, "catchup_read_mb_s": read,
                    "catchup_read_fresh_mb_s": fresh, "catchup_read_first_mb_s": first,
                    "catchup_during_read_mb_s": during_read, "dd_buffered_mb_s": dd})
    idle = folder / "idle.json"
    if idle.exists():
        facts = json.loads(idle.read_text())
        lines += ["", f"Idle broker, {facts['partitions']} partitions and {facts['clients']} idle clients connected: "
                  f"{facts['cpu_percent']:.2f}% of a core over 10 s."]
        summary["idle"] = facts
    text = "\n".join(lines)
    (folder / "summary.md").write_text(text + "\n")
    (folder / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(text)


def row_consume(runs, name):
    return med([(e["bench"].get("consume") or {}).get("mb_per_sec") for e in runs.get(name, [])])


def dd_buffered(folder: Path):
    rates = []
    for path in sorted(folder.glob("dd-buffered.run*.txt")):
        match = re.search(r"(\d+) bytes .* copied, ([\d.]+) s", path.read_text())
        if match:
            rates.append(int(match.group(1)) / float(match.group(2)) / 1e6)
    return med(rates)


if __name__ == "__main__":
    if sys.argv[1] == "--pattern":
        print(pattern(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])))
    else:
        report(Path(sys.argv[1]))
