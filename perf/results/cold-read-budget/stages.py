"""In-broker p99 of each stage between two /metrics scrapes (uses perf/latency_report.py)."""
import sys, math
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
from pathlib import Path
import latency_report as lr
values, buckets = lr.delta(lr.parse_metrics(Path(sys.argv[1])), lr.parse_metrics(Path(sys.argv[2])))
out = []
for metric, label in lr.STAGES:
    b = buckets.get(metric, {})
    p = lr.quantile(b, 0.99)
    if p is not None:
        out.append(f"{label} {p:.2f}")
print("in-broker p99:", ", ".join(out))
