"""kcat (librdkafka's command-line client): `kcat -L` metadata, produce from stdin with
keys, consume from the beginning. Skipped loudly when kcat is not installed (the test
command prints why; CI installs it)."""

import shutil
import subprocess

import pytest

from helpers import create_topic

KCAT = shutil.which("kcat") or shutil.which("kafkacat")
pytestmark = pytest.mark.skipif(KCAT is None, reason="kcat is not installed (apt-get install kcat): kcat tests NOT run")


def run(*args, input=None, timeout=30):
    return subprocess.run([KCAT, *args], input=input, capture_output=True, timeout=timeout, check=True)


def test_kcat_metadata_produce_consume(broker):
    create_topic(broker.bootstrap, "kcat-topic", 3)
    listing = run("-b", broker.bootstrap, "-L").stdout.decode()
    assert 'topic "kcat-topic" with 3 partitions' in listing
    assert f"broker 0 at {broker.bootstrap}" in listing

    lines = "".join(f"k{i}:v{i}\n" for i in range(2000)).encode()
    run("-b", broker.bootstrap, "-t", "kcat-topic", "-P", "-K", ":", "-X", "acks=all", input=lines)
    out = run("-b", broker.bootstrap, "-t", "kcat-topic", "-C", "-e", "-q", "-o", "beginning", "-f", "%k=%s\\n").stdout.decode()
    got = sorted(out.split())
    assert got == sorted(f"k{i}=v{i}" for i in range(2000))


def test_kcat_auto_creates_topic_on_produce(broker):
    run("-b", broker.bootstrap, "-t", "auto-created", "-P", input=b"hello\nworld\n")
    out = run("-b", broker.bootstrap, "-t", "auto-created", "-C", "-e", "-q", "-o", "beginning").stdout.decode()
    assert out.split() == ["hello", "world"]
