"""The soak test's short version (issue 19): `perf/soak.py` for 45 s with a broker restart
every 15 s, member churn every 10 s and topic churn every 3 s. It fails when an
acknowledged record is missing or duplicated, a clean shutdown does not exit 0, RSS keeps
growing, or descriptors grow across restarts. The hour-long run and its plot are in
perf/README.md."""

import json
import subprocess
import sys
from pathlib import Path

from conftest import BINARY

ROOT = Path(__file__).resolve().parents[2]


def test_short_soak(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "perf" / "soak.py"), "--tern", str(BINARY), "--duration-s", "45",
         "--restart-every-s", "15", "--member-churn-s", "10", "--topic-churn-s", "3", "--rate", "1000",
         "--out", str(tmp_path / "soak")],
        capture_output=True, text=True, timeout=400)
    summary_path = tmp_path / "soak" / "summary.json"
    assert summary_path.exists(), result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads(summary_path.read_text())
    print(json.dumps(summary, indent=2))
    assert result.returncode == 0, summary["failures"]
    assert summary["restarts"] == 2
    assert summary["acked"] > 30_000
    assert summary["missing"] == 0 and summary["duplicates"] == 0
