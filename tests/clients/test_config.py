"""`tern serve --config FILE`: every flag settable in TOML, flags override the file,
unknown keys are errors, --print-config shows the effective values, and a broker really
runs with the file's settings."""

import socket
import subprocess

from confluent_kafka import Producer

from conftest import BINARY, free_port


def serve(*args):
    return subprocess.run([str(BINARY), "serve", *args], capture_output=True, text=True, timeout=30)


def test_print_config_merges_file_flags_and_defaults(tmp_path):
    config = tmp_path / "tern.toml"
    config.write_text('listen = "127.0.0.1:19999"\ndata-dir = "/srv/tern"\nno_pin = true\n'
                      'batch_cache_bytes = "64M"\ndefault_partitions = 3\n')
    result = serve("--config", str(config), "--default-partitions", "5", "--print-config")
    assert result.returncode == 0, result.stderr
    printed = dict(line.split(" = ", 1) for line in result.stdout.splitlines() if " = " in line)
    assert printed["listen"] == '"127.0.0.1:19999"'
    assert printed["data_dir"] == '"/srv/tern"'
    assert printed["no_pin"] == "true"
    assert printed["batch_cache_bytes"] == str(64 << 20)
    assert printed["default_partitions"] == "5", "the flag overrides the file"
    assert printed["memory"] == str(2 << 20), "defaults fill the rest"
    # The printed configuration is itself a valid config file.
    again = tmp_path / "again.toml"
    again.write_text(result.stdout)
    assert serve("--config", str(again), "--print-config").stdout == result.stdout


def test_unknown_keys_and_bad_values_are_refused(tmp_path):
    config = tmp_path / "tern.toml"
    config.write_text('lisen = "127.0.0.1:1"\n')
    result = serve("--config", str(config), "--print-config")
    assert result.returncode != 0
    assert "unknown key `lisen`" in result.stderr and str(config) in result.stderr
    config.write_text('memory = "lots"\n')
    result = serve("--config", str(config), "--print-config")
    assert result.returncode != 0 and "memory" in result.stderr
    result = serve("--config", str(tmp_path / "missing.toml"))
    assert result.returncode != 0 and "cannot read config file" in result.stderr


def test_a_broker_runs_with_the_file_settings(tmp_path):
    port = free_port()
    config = tmp_path / "tern.toml"
    config.write_text(f'listen = "127.0.0.1:{port}"\ndata_dir = "{tmp_path / "data"}"\ncores = "0-1"\n'
                      'no_pin = true\nmemory = "1M"\nadmin_listen = "off"\n')
    process = subprocess.Popen([str(BINARY), "serve", "--config", str(config)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                if process.poll() is not None:
                    raise AssertionError(process.stderr.read().decode())
                subprocess.run(["sleep", "0.05"])
        producer = Producer({"bootstrap.servers": f"127.0.0.1:{port}"})
        producer.produce("from-config", b"hello")
        assert producer.flush(10) == 0
        assert (tmp_path / "data" / "from-config-0").is_dir(), "the data dir came from the file"
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0
