"""Pairs block_rq_issue/complete events (perf script output) and prints latency per kind (writes, reads; flush pairing is approximate)."""
import sys, re, collections
issued = {}
flushes = collections.deque()
lat = collections.defaultdict(list)
big = []
kinds = collections.Counter()
for line in open(sys.argv[1]):
    m = re.match(r"\s*([\d.]+):\s+block:(block_rq_issue|block_rq_complete):\s+\S+\s+(\S+)\s+(?:(\d+)\s+)?\(\)\s+(\d+)\s+\+\s+(\d+)", line)
    if not m:
        continue
    t, ev, rwbs, nbytes, sector, nsec = m.groups()
    t = float(t)
    kind = 'flush' if rwbs.startswith('F') else ('read' if 'R' in rwbs else 'write')
    if ev == 'block_rq_issue':
        kinds[rwbs] += 1
        if kind == 'flush':
            flushes.append(t)
        else:
            issued[(sector, nsec, kind)] = t
    else:
        if kind == 'flush':
            if not flushes: continue
            t0 = flushes.popleft()
        else:
            t0 = issued.pop((sector, nsec, kind), None)
            if t0 is None: continue
        ms = (t - t0) * 1e3
        lat[kind].append(ms)
        if ms > 5: big.append((round(t0, 3), kind, rwbs, nsec, round(ms, 2)))
print("issued by type:", dict(kinds))
for kind, v in sorted(lat.items()):
    v.sort(); n = len(v)
    q = lambda p: v[min(n - 1, int(p * n))]
    print(f"{kind:6} n={n:6} p50 {q(.5):.3f} p99 {q(.99):.3f} p99.9 {q(.999):.3f} max {v[-1]:.3f} ms")
print("over 5 ms:", len(big), big[:15])
