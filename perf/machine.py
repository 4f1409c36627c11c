#!/usr/bin/env python3
"""Raw figures of the machine a perf run happens on, so results can be read against them.

    python3 perf/machine.py DATA_DIR OUT.json
    python3 perf/machine.py disk-pattern DATA_DIR OUT.json --files 8 --write-bytes 16384 \
        --rate-bytes 10000000 --seconds 10 [--mode fdatasync|dsync] \
        [--read-files FILE... --read-bytes 262144 --read-rate-bytes 50000000]

The second form is the raw-disk baseline of one broker scenario: the same number of files
(partitions), write size and bandwidth, each file appended by its own thread with
O_DIRECT and made durable after every write (fdatasync, or O_DSYNC writes as Tern's
default does), paced like the load tool (latency from each write's scheduled time, so a
stall is not hidden). It reports p50/p99/p99.9/max and the CPU the process spent per
write, which is the floor of what one durable write costs on this machine. With
`--read-files`, one more thread reads those files meanwhile, one 256 KiB read at a time
with readahead off at 50 MB/s, as Tern paces a cold catch-up (each file dropped from the
page cache first): the disk's own latency under the catch-up scenario's pattern.

Records nproc, CPU model, kernel, memory, the data dir's file system, raw O_DIRECT write
bandwidth (dd, 1 MiB blocks, 2 GiB, median of 3), fdatasync latency of 4 KiB appends
(5 s loop, percentiles: what one durable produce can cost at best) and loopback TCP
bandwidth (two processes, 1 MiB sends, 3 s; Python on both ends, so a lower bound).
"""

import json
import mmap
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def dd_mib_s(data_dir: Path) -> float:
    target = data_dir / "dd.tmp"
    try:
        out = subprocess.run(
            ["dd", "if=/dev/zero", f"of={target}", "bs=1M", "count=2048", "oflag=direct"],
            capture_output=True, text=True, check=True,
        ).stderr
    finally:
        target.unlink(missing_ok=True)
    match = re.search(r"(\d+) bytes .* copied, ([\d.]+) s", out)
    return int(match.group(1)) / float(match.group(2)) / 2**20


def fdatasync_latency_ms(data_dir: Path, seconds: float = 5.0) -> dict:
    target = data_dir / "fsync.tmp"
    fd = os.open(target, os.O_CREAT | os.O_WRONLY | os.O_TRUNC | os.O_DIRECT)
    block = mmap.mmap(-1, 4096)  # page-aligned, as O_DIRECT needs
    samples, offset = [], 0
    try:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            start = time.perf_counter()
            os.pwrite(fd, block, offset)
            os.fdatasync(fd)
            samples.append((time.perf_counter() - start) * 1e3)
            offset += 4096
    finally:
        os.close(fd)
        target.unlink(missing_ok=True)
    samples.sort()
    pick = lambda q: round(samples[min(len(samples) - 1, int(q * len(samples)))], 3)
    return {"samples": len(samples), "p50": pick(0.5), "p99": pick(0.99), "p999": pick(0.999),
            "max": round(samples[-1], 3), "over_20ms": sum(1 for s in samples if s > 20)}


def loopback_gb_s(seconds: float = 3.0) -> float:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    pid = os.fork()
    if pid == 0:  # sender
        server.close()
        with socket.create_connection(("127.0.0.1", port)) as s:
            chunk = b"\0" * (1 << 20)
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                s.sendall(chunk)
        os._exit(0)
    conn, _ = server.accept()
    buffer = bytearray(1 << 20)
    total, start = 0, time.monotonic()
    while True:
        n = conn.recv_into(buffer)
        if n == 0:
            break
        total += n
    elapsed = time.monotonic() - start
    os.waitpid(pid, 0)
    conn.close()
    server.close()
    return total / elapsed / 1e9


def cold_reader(paths: list[Path], read_bytes: int, rate_bytes: float, until: float, stats: dict) -> None:
    """Reads `paths` in order, `read_bytes` at a time, one read in flight, readahead off
    (POSIX_FADV_RANDOM), at most `rate_bytes` per second: the way Tern paces a cold
    catch-up while it takes writes (`src/server/sendfile.rs`)."""
    interval = read_bytes / rate_bytes if rate_bytes > 0 else 0.0
    scheduled = time.monotonic()
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # cold: nothing of it cached
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
            offset = 0
            while time.monotonic() < until:
                now = time.monotonic()
                if now < scheduled:
                    time.sleep(scheduled - now)
                started = time.monotonic()
                data = os.pread(fd, read_bytes, offset)
                stats["read_ms"].append((time.monotonic() - started) * 1e3)
                if not data:
                    break
                offset += len(data)
                stats["bytes"] += len(data)
                # Never ahead of the rate; a slow read does not earn a burst after it.
                scheduled = max(scheduled + interval, time.monotonic() - interval)
        finally:
            os.close(fd)
        if time.monotonic() >= until:
            return


def disk_pattern(data_dir: Path, files: int, write_bytes: int, rate_bytes: float, seconds: float,
                 mode: str = "fdatasync", read_paths: list[Path] | None = None, read_bytes: int = 256 << 10,
                 read_rate_bytes: float = 50e6) -> dict:
    """Appends `write_bytes` per write to `files` files at `rate_bytes` in total; with
    `read_paths`, while one thread reads those (cold) files as `cold_reader` does."""
    import threading

    data_dir.mkdir(parents=True, exist_ok=True)
    per_file_interval = files * write_bytes / rate_bytes if rate_bytes > 0 else 0.0
    flags = os.O_CREAT | os.O_WRONLY | os.O_TRUNC | os.O_DIRECT | (os.O_DSYNC if mode == "dsync" else 0)
    samples: list[list[float]] = [[] for _ in range(files)]
    start_at = time.monotonic() + 0.2
    end_at = start_at + seconds

    def run(index: int) -> None:
        path = data_dir / f"disk-pattern-{index}.tmp"
        fd = os.open(path, flags, 0o644)
        block = mmap.mmap(-1, write_bytes)  # page-aligned, as O_DIRECT needs
        block.write(b"x" * write_bytes)
        offset = 0
        # Stagger the files across one interval, as partitions' batches are.
        scheduled = start_at + per_file_interval * index / files
        mine = samples[index]
        try:
            while scheduled < end_at:
                now = time.monotonic()
                if now < scheduled:
                    time.sleep(scheduled - now)
                os.pwrite(fd, block, offset)
                if mode == "fdatasync":
                    os.fdatasync(fd)
                mine.append((time.monotonic() - scheduled) * 1e3)
                offset += write_bytes
                scheduled = scheduled + per_file_interval if per_file_interval else time.monotonic()
        finally:
            os.close(fd)
            path.unlink(missing_ok=True)

    cpu_before = os.times()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(files)]
    read_stats = {"bytes": 0, "read_ms": []}
    if read_paths:
        threads.append(threading.Thread(target=cold_reader,
                                        args=(read_paths, read_bytes, read_rate_bytes, end_at, read_stats)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    cpu_after = os.times()
    cpu_seconds = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
    all_samples = sorted(x for mine in samples for x in mine)
    n = len(all_samples)
    pick = lambda q: round(all_samples[min(n - 1, int(q * n))], 3) if n else None
    reads = sorted(read_stats["read_ms"])
    cold_read = None
    if read_paths:
        cold_read = {
            "read_bytes": read_bytes, "offered_mb_s": round(read_rate_bytes / 1e6, 1),
            "achieved_mb_s": round(read_stats["bytes"] / (time.monotonic() - start_at) / 1e6, 1),
            "reads": len(reads),
            "read_p50_ms": round(reads[len(reads) // 2], 3) if reads else None,
            "read_p99_ms": round(reads[min(len(reads) - 1, int(0.99 * len(reads)))], 3) if reads else None,
        }
    return {
        "cold_read": cold_read,
        "files": files, "write_bytes": write_bytes, "mode": mode, "seconds": seconds,
        "offered_mb_s": round(rate_bytes / 1e6, 2), "achieved_mb_s": round(n * write_bytes / seconds / 1e6, 2),
        "writes": n, "p50": pick(0.5), "p99": pick(0.99), "p999": pick(0.999),
        "max": round(all_samples[-1], 3) if n else None,
        "cpu_percent": round(cpu_seconds / seconds * 100, 1),
        "cpu_us_per_write": round(cpu_seconds / n * 1e6, 1) if n else None,
    }


def disk_pattern_main(argv: list[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="machine.py disk-pattern")
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--write-bytes", type=int, default=16384)
    parser.add_argument("--rate-bytes", type=float, required=True)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--mode", choices=["fdatasync", "dsync"], default="fdatasync")
    parser.add_argument("--read-files", type=Path, nargs="*", default=[],
                        help="cold files one thread reads meanwhile, paced as Tern paces a catch-up")
    parser.add_argument("--read-bytes", type=int, default=256 << 10)
    parser.add_argument("--read-rate-bytes", type=float, default=50e6)
    args = parser.parse_args(argv)
    result = disk_pattern(args.data_dir, args.files, args.write_bytes, args.rate_bytes, args.seconds, args.mode,
                          args.read_files, args.read_bytes, args.read_rate_bytes)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


def main():
    if sys.argv[1] == "disk-pattern":
        disk_pattern_main(sys.argv[2:])
        return
    data_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
    data_dir.mkdir(parents=True, exist_ok=True)
    fs = subprocess.run(["df", "-T", str(data_dir)], capture_output=True, text=True).stdout.splitlines()[-1].split()
    dd_runs = [round(dd_mib_s(data_dir), 1) for _ in range(3)]
    facts = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "kernel": platform.release(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "data_dir_fs": f"{fs[1]} on {fs[0]}",
        "dd_direct_mib_s": statistics.median(dd_runs),
        "dd_direct_runs": dd_runs,
        "fdatasync_4k_ms": fdatasync_latency_ms(data_dir),
        "loopback_gb_s": round(loopback_gb_s(), 2),
    }
    out.write_text(json.dumps(facts, indent=2))
    print(json.dumps(facts, indent=2))


if __name__ == "__main__":
    main()
