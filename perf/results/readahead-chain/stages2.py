"""In-broker stage p99 and p99.9 between two /metrics scrapes: stages2.py BEFORE AFTER."""
import sys
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
from pathlib import Path
import latency_report as lr
values, buckets = lr.delta(lr.parse_metrics(Path(sys.argv[1])), lr.parse_metrics(Path(sys.argv[2])))
for q in (0.99, 0.999):
    out = []
    for metric, label in lr.STAGES:
        p = lr.quantile(buckets.get(metric, {}), q)
        if p is not None:
            out.append(f"{label} {p:.2f}")
    print(f"   in-broker p{q*100:g}:", ", ".join(out))
