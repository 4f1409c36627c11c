#!/usr/bin/env python3
"""Summarises a perf/suite.sh result folder: medians over runs, a Markdown table for
perf/README.md, CSV and JSON, and two plots.

    python perf/suite_report.py perf/results/suite-<time> [--broker-cores 0 --load-cores 1]
"""

import argparse
import csv
import json
import re
import statistics
from collections import defaultdict
from pathlib import Path


def load_runs(folder: Path):
    runs = defaultdict(list)
    for path in sorted(folder.glob("*.run*.json")):
        name = re.sub(r"\.run\d+\.json$", "", path.name)
        runs[name].append(json.loads(path.read_text()))
    return runs


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def stream_row(name, runs, stream):
    entries = [r[stream] for r in runs if r.get(stream)]
    latency = [e["latency"] for e in entries if e.get("latency")]
    e2e = [r["e2e"] for r in runs if r.get("e2e")]
    return {
        "scenario": name,
        "runs": len(runs),
        "records_per_sec": median([e["records_per_sec"] for e in entries]),
        "mb_per_sec": median([e["mb_per_sec"] for e in entries]),
        "runs_records_per_sec": [round(e["records_per_sec"]) for e in entries],
        "p50_ms": median([l["p50_ms"] for l in latency]),
        "p99_ms": median([l["p99_ms"] for l in latency]),
        "p999_ms": median([l["p999_ms"] for l in latency]),
        "max_ms": median([l["max_ms"] for l in latency]),
        "e2e_p50_ms": median([l["p50_ms"] for l in e2e]),
        "e2e_p99_ms": median([l["p99_ms"] for l in e2e]),
        "e2e_p999_ms": median([l["p999_ms"] for l in e2e]),
        "errors": sum(sum(r["errors"].values()) for r in runs),
    }


def fmt(value, digits=2):
    if value is None:
        return "-"
    if isinstance(value, float) and value >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    parser.add_argument("--broker-cores", default="?")
    parser.add_argument("--load-cores", default="?")
    args = parser.parse_args()
    folder = args.folder
    machine = json.loads((folder / "machine.json").read_text())
    runs = load_runs(folder)
    rows = []
    for name, scenario_runs in runs.items():
        stream = "consume" if name.startswith("consume") else "produce"
        rows.append(stream_row(name, scenario_runs, stream))
    order = lambda r: (0 if r["scenario"].startswith("produce") else 1 if r["scenario"].startswith("consume") else 2,
                       int(re.sub(r"\D", "", r["scenario"].split("-")[-1]) or 0) if r["scenario"].startswith("e2e") else 0,
                       r["scenario"])
    rows.sort(key=order)
    idle = json.loads((folder / "idle.json").read_text()) if (folder / "idle.json").exists() else {}

    dd = machine["dd_direct_mib_s"] * 2**20 / 1e6  # MB/s
    fs = machine["fdatasync_4k_ms"]
    lines = [
        f"Machine: {machine['nproc']} CPUs ({machine['cpu_model']}), {machine['memory_gib']} GiB, kernel "
        f"{machine['kernel']}, {machine['data_dir_fs']}; {machine['date']}. Broker on CPU {args.broker_cores}, "
        f"load tool on CPU {args.load_cores}.",
        "",
        f"Raw figures from the same run: dd O_DIRECT {machine['dd_direct_mib_s']:.0f} MiB/s "
        f"({dd:.0f} MB/s; runs {machine['dd_direct_runs']}), 4 KiB write+fdatasync p50 {fs['p50']} ms / "
        f"p99 {fs['p99']} ms / p99.9 {fs['p999']} ms / max {fs['max']} ms ({fs['over_20ms']} of {fs['samples']} "
        f"over 20 ms), loopback TCP {machine['loopback_gb_s']} GB/s (Python, lower bound).",
        "",
        "| scenario | records/s | MB/s | share of dd | p50 ms | p99 ms | p99.9 ms | max ms | e2e p50 | e2e p99 | e2e p99.9 | errors | runs (records/s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        share = f"{100 * r['mb_per_sec'] / dd:.0f}%" if r["mb_per_sec"] and not r["scenario"].startswith("e2e") else "-"
        lines.append(
            f"| {r['scenario']} | {fmt(r['records_per_sec'])} | {fmt(r['mb_per_sec'], 1)} | {share} | "
            f"{fmt(r['p50_ms'])} | {fmt(r['p99_ms'])} | {fmt(r['p999_ms'])} | {fmt(r['max_ms'])} | "
            f"{fmt(r['e2e_p50_ms'])} | {fmt(r['e2e_p99_ms'])} | {fmt(r['e2e_p999_ms'])} | {r['errors']} | "
            f"{', '.join(f'{v:,}' for v in r['runs_records_per_sec'])} |"
        )
    if idle:
        lines += ["", f"Idle broker: {idle['cpu_percent']:.2f}% of one CPU over 10 s."]
    table = "\n".join(lines)
    (folder / "summary.md").write_text(table + "\n")
    (folder / "summary.json").write_text(json.dumps({"machine": machine, "idle": idle, "scenarios": rows}, indent=2))
    with open(folder / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[k for k in rows[0] if k != "runs_records_per_sec"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    print(table)
    plot(folder, runs, rows)


def plot(folder, runs, rows):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for name, scenario_runs in runs.items():
        if name.startswith("e2e"):
            continue
        stream = "consume" if name.startswith("consume") else "produce"
        timeline = scenario_runs[0]["timeline"]
        xs = [t["at_sec"] for t in timeline if t.get(stream)]
        ys = [t[stream]["mb_per_sec"] for t in timeline if t.get(stream)]
        ax.plot(xs, ys, marker=".", label=name)
    ax.set_xlabel("seconds since start (first run; warmup included)")
    ax.set_ylabel("MB/s")
    ax.set_title("Throughput over time")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / "throughput-over-time.png", dpi=110)

    sweep = [r for r in rows if r["scenario"].startswith("e2e") and r["records_per_sec"]]
    if sweep:
        fig, ax = plt.subplots(figsize=(9, 4.5))
        rate = [r["records_per_sec"] / 1e6 for r in sweep]
        for key, label in [("p50_ms", "produce p50"), ("p99_ms", "produce p99"), ("p999_ms", "produce p99.9"),
                           ("e2e_p50_ms", "e2e p50"), ("e2e_p99_ms", "e2e p99"), ("e2e_p999_ms", "e2e p99.9")]:
            ax.plot(rate, [r[key] for r in sweep], marker="o", linestyle="-" if key.startswith("p") else "--", label=label)
        ax.set_yscale("log")
        ax.set_xlabel("offered rate (million records/s, 100-byte records)")
        ax.set_ylabel("latency (ms, log scale)")
        ax.set_title("Latency percentiles against offered rate (acks=all, durable)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(folder / "latency-vs-rate.png", dpi=110)


if __name__ == "__main__":
    main()
