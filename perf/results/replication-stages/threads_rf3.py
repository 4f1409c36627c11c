"""Per-thread CPU of the three brokers during an RF=3 bench at RATE (0 = peak)."""
import re, os, sys, subprocess, time, tempfile, shutil
from pathlib import Path
ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "perf")); sys.path.insert(0, str(ROOT / "tests" / "clients"))
import replication as r
import cluster_fixture
tern = os.environ.get("TERN", str(ROOT / "target/release/tern"))
cluster_fixture.BINARY = Path(tern)
rate = int(os.environ.get("RATE", "0"))
tmp = tempfile.mkdtemp(dir=str(ROOT / "target"))
cluster = cluster_fixture.Cluster(Path(tmp), extra_args=r.CLUSTER_ARGS).start()
def ticks(pid):
    out = {}
    for t in Path(f"/proc/{pid}/task").iterdir():
        try:
            st = (t / "stat").read_text()
        except FileNotFoundError:
            continue
        name = st[st.index("(")+1:st.rindex(")")]
        f = st.rsplit(")", 1)[1].split()
        st2 = (t / "status").read_text()
        cs = sum(int(x) for x in re.findall(r"ctxt_switches:\s+(\d+)", st2))
        out[(t.name, name)] = (int(f[11]) + int(f[12]), cs)
    return out
try:
    cluster.wait_formed()
    r.create(cluster, "rf3", 6, 3)
    time.sleep(3)
    cmd = [tern, "bench", "produce", "--brokers", cluster.bootstrap, "--topic", "rf3", "--duration", "10s", "--warmup", "2s",
           "--producers", "2", "--batch-bytes", r.BATCH_BYTES]
    if rate: cmd += ["--rate", str(rate), "--linger-ms", os.environ.get("LINGER", "5")]
    bench = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    time.sleep(4)
    pids = [n.process.pid for n in cluster.nodes.values()]
    before = {p: ticks(p) for p in pids}; stat0 = Path("/proc/stat").read_text().split("\n")[0].split()[1:]
    time.sleep(5)
    after = {p: ticks(p) for p in pids}; stat1 = Path("/proc/stat").read_text().split("\n")[0].split()[1:]
    agg = {}
    for p in pids:
        for k, v in after[p].items():
            b = before[p].get(k, (0, 0))
            name = k[1].rstrip("0123456789-")
            a = agg.setdefault(name, [0, 0, 0]); a[0] += v[0]-b[0]; a[1] += v[1]-b[1]; a[2] += 1
    tot = [int(b) - int(a) for a, b in zip(stat0, stat1)]
    print("machine: user", tot[0], "sys", tot[2], "idle", tot[3], "iowait", tot[4], "irq", tot[5], "softirq", tot[6], "(ticks over 5 s, 2 cpus = 1000)")
    for name, d in sorted(agg.items(), key=lambda x: -x[1][0]):
        if d[0] or d[1]: print(f"  {name:24s} ticks {d[0]} ctx_switches {d[1]} threads {d[2]}")
    out, _ = bench.communicate(timeout=60)
    print([l for l in out.splitlines() if "records/s" in l][:2])
finally:
    cluster.shutdown(); shutil.rmtree(tmp, ignore_errors=True)
