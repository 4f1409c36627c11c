"""A broker whose log cannot be written keeps serving.

The broker's stdout and stderr go to /dev/full, where every write fails with ENOSPC, as
when the disk holding the log file fills up. Before, tracing-subscriber reported the
failed write with `eprintln!`, which panicked because stderr failed too, and the panic
aborted the broker (exit 134, seen when a perf run filled the disk). Now the broker
starts, a real client produces and reads back, and SIGTERM still exits 0."""

import signal
import socket
import subprocess
import time

from confluent_kafka import Consumer, Producer

from conftest import BINARY, START_TIMEOUT_S, free_port


def test_broker_serves_with_its_log_on_a_full_disk(tmp_path):
    port = free_port()
    with open("/dev/full", "wb") as full:
        process = subprocess.Popen(
            [str(BINARY), "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "data"),
             "--cores", "0", "--no-pin", "--memory", "1M", "--admin-listen", "off"],
            stdout=full, stderr=full,
        )
    try:
        deadline = time.time() + START_TIMEOUT_S
        while True:
            assert process.poll() is None, f"broker exited with {process.returncode} while its log could not be written"
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                assert time.time() < deadline, "broker did not start listening"
                time.sleep(0.05)
        producer = Producer({"bootstrap.servers": f"127.0.0.1:{port}", "acks": "all"})
        for n in range(100):
            producer.produce("full-log", value=str(n).encode())
        assert producer.flush(20) == 0, "every record acknowledged"
        consumer = Consumer({"bootstrap.servers": f"127.0.0.1:{port}", "group.id": "full-log",
                             "auto.offset.reset": "earliest", "enable.auto.commit": False})
        consumer.subscribe(["full-log"])
        values, deadline = [], time.time() + 30
        while len(values) < 100 and time.time() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                values.append(int(message.value()))
        consumer.close()
        assert sorted(values) == list(range(100))
        assert process.poll() is None, f"broker exited with {process.returncode}"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, "clean shutdown exits 0 even with an unwritable log"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
