"""The README quickstart, literally, as a new user runs it: `tern serve` with no flags at
all (default listen address 127.0.0.1:9092, default admin port 9644, default data dir
`./tern-data`, a relative path) from a fresh, empty working directory; then the README's
shell block (kcat produce, auto-creating `demo`, consume from the beginning, list
metadata) and its Python block (confluent-kafka producer and group consumer), both taken
from README.md itself so the test breaks when the README and the broker drift apart.

Round 1 shipped a quickstart that failed because the default data dir is relative and
every test passed an absolute one; this test is the guard against that class of bug. A
restart from the same directory then checks the relative data dir is recovered too.

The kcat part is skipped loudly when kcat is not installed; the Python part always runs.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time


from conftest import BINARY, ROOT

KCAT = shutil.which("kcat") or shutil.which("kafkacat")
DEFAULT_PORT = 9092
DEFAULT_ADMIN_PORT = 9644


def readme_block(language: str, containing: str) -> str:
    """The first ```language fenced block of README.md's Quickstart that contains `containing`."""
    readme = (ROOT / "README.md").read_text()
    quickstart = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    for block in re.findall(r"```" + language + r"\n(.*?)```", quickstart, flags=re.S):
        if containing in block:
            return block
    raise AssertionError(f"README quickstart has no ```{language} block containing {containing!r}")


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def start_default_broker(cwd, log):
    process = subprocess.Popen([str(BINARY), "serve"], cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 20
    while time.time() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"`tern serve` exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", DEFAULT_PORT), timeout=0.2):
                return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise AssertionError("`tern serve` did not listen on 127.0.0.1:9092 within 20 s")


def stop(process):
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
            raise
    return process.returncode


def test_readme_quickstart_with_every_default_from_a_fresh_directory(tmp_path):
    for port in (DEFAULT_PORT, DEFAULT_ADMIN_PORT):
        assert port_free(port), f"port {port} is taken: the quickstart test needs the broker's default ports"
    workdir = tmp_path / "fresh"
    workdir.mkdir()
    log_path = tmp_path / "tern.log"
    log = open(log_path, "ab")
    process = start_default_broker(workdir, log)
    try:
        shell = readme_block("sh", "kcat")
        if KCAT is None:
            print("!!!! kcat is not installed: the README's kcat lines are NOT run (apt-get install kcat)")
        else:
            commands = [line.split("#")[0].strip() for line in shell.splitlines()]
            commands = [c.replace("kcat", KCAT, 1) if c.startswith("kcat") or " kcat " in c else c for c in commands if c]
            produce, consume, listing = commands
            subprocess.run(produce, shell=True, cwd=workdir, check=True, timeout=60)
            out = subprocess.run(consume, shell=True, cwd=workdir, check=True, timeout=60, capture_output=True)
            assert out.stdout.decode().split() == [str(i) for i in range(1, 1001)], "kcat reads back seq 1 1000"
            meta = subprocess.run(listing, shell=True, cwd=workdir, check=True, timeout=60, capture_output=True)
            assert 'topic "demo" with 1 partitions' in meta.stdout.decode()
            assert "broker 0 at 127.0.0.1:9092" in meta.stdout.decode()

        python = readme_block("python", "confluent_kafka")
        run = subprocess.run([sys.executable, "-c", python], cwd=workdir, capture_output=True, timeout=90)
        assert run.returncode == 0, run.stderr.decode()
        first = b"1" if KCAT is not None else b"hello"
        assert run.stdout.decode().strip() == repr(first), f"the group consumer reads from the start: {run.stdout!r}"

        data_dir = workdir / "tern-data"
        assert (data_dir / "demo-0").is_dir(), f"the default data dir is ./tern-data: {os.listdir(workdir)}"
        assert (data_dir / "cluster-metadata").is_file()
    finally:
        code = stop(process)
    log_text = log_path.read_text(errors="replace")
    assert code == 0, f"clean shutdown must exit 0:\n{log_text[-3000:]}"
    assert "Bad file descriptor" not in log_text and "panicked" not in log_text, log_text[-3000:]

    # Started again from the same directory, the relative data dir is recovered.
    process = start_default_broker(workdir, log)
    try:
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer({"bootstrap.servers": "127.0.0.1:9092", "group.id": "after-restart"})
        low, high = consumer.get_watermark_offsets(TopicPartition("demo", 0), timeout=10)
        consumer.close()
        assert (low, high) == (0, 1001 if KCAT is not None else 1)
    finally:
        assert stop(process) == 0
