"""`tern tune`: the read-only check prints every setting with its current and recommended
value, and its exit code says whether anything is off; --apply refuses without root."""

import os
import subprocess

from conftest import BINARY

SETTINGS = ["cpu governor", "fs.aio-max-nr", "net.core.somaxconn", "net.ipv4.tcp_max_syn_backlog",
            "vm.swappiness", "transparent huge pages", "disk scheduler", "irq affinity", "memlock limit",
            "open files limit", "clocksource"]


def test_check_reports_every_setting_and_exit_code_matches(tmp_path):
    result = subprocess.run([str(BINARY), "tune", "--check", "--cores", "0", "--data-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=30)
    print(result.stdout, result.stderr)
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["setting", "current", "recommended", "status"]
    for setting in SETTINGS:
        row = next((line for line in lines if line.startswith(setting)), None)
        assert row is not None, f"{setting} missing"
        assert row.split()[-1] in ("ok", "OFF", "n/a"), row
    off = sum(1 for line in lines[1:] if line.endswith(" OFF"))
    if off:
        assert result.returncode != 0 and f"{off} setting(s) differ" in result.stderr
    else:
        assert result.returncode == 0 and "everything checked is as recommended" in result.stdout


def test_memlock_check_follows_the_broker_sizing(tmp_path):
    # 64 shards x 1 GiB cannot fit any ordinary memlock limit.
    result = subprocess.run([str(BINARY), "tune", "--check", "--cores", "0-63", "--memory", "1G",
                             "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=30)
    row = next(line for line in result.stdout.splitlines() if line.startswith("memlock limit"))
    if "unlimited" not in row:
        assert row.endswith("OFF"), row
        assert "LimitMEMLOCK" in result.stdout
        assert result.returncode != 0


def test_apply_without_root_is_refused(tmp_path):
    if os.geteuid() == 0:
        # Drop to nobody in a child so the real host is never touched.
        result = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(BINARY), "tune",
                                 "--apply"], capture_output=True, text=True, timeout=30)
    else:
        result = subprocess.run([str(BINARY), "tune", "--apply"], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and "needs root" in result.stderr, result.stderr


def fake_host(root, governor="powersave", swappiness="60", thp="[always] madvise never"):
    """A /proc and /sys tree with settings that are all off the recommendation."""
    files = {
        "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor": governor,
        "sys/devices/system/cpu/cpu1/cpufreq/scaling_governor": governor,
        "proc/sys/fs/aio-max-nr": "65536",
        "proc/sys/net/core/somaxconn": "128",
        "proc/sys/net/ipv4/tcp_max_syn_backlog": "512",
        "proc/sys/vm/swappiness": swappiness,
        "sys/kernel/mm/transparent_hugepage/enabled": thp,
        "sys/devices/system/clocksource/clocksource0/current_clocksource": "hpet",
        "sys/devices/system/clocksource/clocksource0/available_clocksource": "tsc hpet acpi_pm",
        "proc/interrupts": "           CPU0       CPU1\n 24:    100    0   PCI-MSI 1-edge   virtio0-input.0\n"
                           " 25:    0    0   PCI-MSI 2-edge   timer\n",
        "proc/irq/24/smp_affinity_list": "0",
        "proc/irq/25/smp_affinity_list": "0",
    }
    for path, content in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content + "\n")
    return root


def test_apply_changes_every_setting_it_can_on_a_prepared_tree(tmp_path):
    root = fake_host(tmp_path / "host")
    args = ["--cores", "0", "--data-dir", str(tmp_path), "--root", str(root)]
    before = subprocess.run([str(BINARY), "tune", "--check", *args], capture_output=True, text=True, timeout=30)
    print(before.stdout)
    assert before.returncode != 0
    for setting in ["cpu governor", "fs.aio-max-nr", "net.core.somaxconn", "vm.swappiness",
                    "transparent huge pages", "irq affinity", "clocksource"]:
        row = next(line for line in before.stdout.splitlines() if line.startswith(setting))
        assert row.endswith("OFF"), row

    applied = subprocess.run([str(BINARY), "tune", "--apply", *args], capture_output=True, text=True, timeout=30)
    print(applied.stdout, applied.stderr)
    assert "vm.swappiness: wrote 1" in applied.stdout
    assert (root / "proc/sys/vm/swappiness").read_text().strip() == "1"
    assert (root / "proc/sys/fs/aio-max-nr").read_text().strip() == "1048576"
    assert (root / "sys/devices/system/cpu/cpu1/cpufreq/scaling_governor").read_text().strip() == "performance"
    assert (root / "sys/kernel/mm/transparent_hugepage/enabled").read_text().strip() == "madvise"
    assert (root / "proc/irq/24/smp_affinity_list").read_text().strip() != "0", "the virtio IRQ left core 0"
    assert (root / "proc/irq/25/smp_affinity_list").read_text().strip() == "0", "non-device IRQs are left alone"

    # Real sysfs shows the selection in brackets; the fake tree holds the plain value now,
    # which the check reads as the current setting.
    after = subprocess.run([str(BINARY), "tune", "--check", *args], capture_output=True, text=True, timeout=30)
    print(after.stdout)
    for setting in ["cpu governor", "fs.aio-max-nr", "net.core.somaxconn", "vm.swappiness", "irq affinity",
                    "clocksource"]:
        row = next(line for line in after.stdout.splitlines() if line.startswith(setting))
        assert row.endswith(" ok"), row
