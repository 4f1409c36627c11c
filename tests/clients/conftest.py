"""Fixtures that start the real `tern` binary for client tests.

Each broker runs on a free 127.0.0.1 port with a temporary data dir and 2 shards
(`--cores 0-1 --no-pin` so tests work on any machine), and is stopped by PID: SIGTERM
first (a clean shutdown must exit 0), SIGKILL if it does not stop in time.
"""

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

# The shared helper modules' plain asserts (moved there from test modules) report the
# compared values on failure, as they did in the tests.
pytest.register_assert_rewrite("helpers", "txn_helpers")

ROOT = Path(__file__).resolve().parents[2]
BINARY = Path(os.environ.get("TERN_BIN", ROOT / "target" / "release" / "tern"))
START_TIMEOUT_S = 20


_HANDED_OUT = set()


def free_port() -> int:
    """A free port never handed out before in this run (the kernel can give the same
    ephemeral port to two binds in a row once the first socket is closed)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


class Broker:
    def __init__(self, data_dir: Path, extra_args=()):
        self.data_dir = data_dir
        self.port = free_port()
        self.admin_port = free_port()
        self.extra_args = list(extra_args)
        self.process = None
        self.log_path = data_dir.parent / f"tern-{self.port}.log"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self):
        assert BINARY.exists(), f"{BINARY} is missing: run `cargo build --release` first"
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [str(BINARY), "serve", "--listen", self.bootstrap, "--data-dir", str(self.data_dir),
             "--cores", "0-1", "--no-pin", "--memory", "1M", "--admin-listen", f"127.0.0.1:{self.admin_port}",
             *self.extra_args],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.time() + START_TIMEOUT_S
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tern exited with {self.process.returncode}:\n{self.log_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"tern did not start listening in {START_TIMEOUT_S}s:\n{self.log_text()}")

    def stop(self, timeout=30) -> int:
        """Graceful stop (SIGTERM); returns the exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self):
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


@pytest.fixture
def broker_factory(tmp_path):
    brokers = []

    def make(data_dir=None, extra_args=()):
        broker = Broker(data_dir or (tmp_path / f"data-{len(brokers)}"), extra_args)
        brokers.append(broker)
        return broker.start()

    yield make
    for broker in brokers:
        broker.kill()
        if "panicked" in broker.log_text():
            pytest.fail(f"broker panicked:\n{broker.log_text()}")


@pytest.fixture
def broker(broker_factory):
    b = broker_factory()
    yield b
    code = b.stop()
    assert code == 0, f"clean shutdown must exit 0, got {code}:\n{b.log_text()}"
