"""The systemd unit, the settings documentation and the packaging stay true to the code."""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


BOT_UNIT = "sdbot.service"
WORKER_UNIT = "sdbot-worker.service"
UNITS = (BOT_UNIT, WORKER_UNIT)


def unit_text(name: str = BOT_UNIT) -> str:
    return (ROOT / "deploy" / name).read_text()


def unit_lines(name: str = BOT_UNIT) -> dict[str, list[str]]:
    """Each key of the unit with all its values (keys like DeviceAllow= repeat)."""
    lines: dict[str, list[str]] = {}
    for line in unit_text(name).splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            lines.setdefault(key, []).append(value)
    return lines


def test_unit_is_a_notify_service_with_watchdog_state_and_restarts() -> None:
    unit = unit_lines()
    assert unit["Type"] == ["notify"] and unit["WatchdogSec"] == ["60"]
    assert unit["ExecStart"] == ["/opt/sdbot/.venv/bin/sdbot"]
    assert unit["EnvironmentFile"] == ["/opt/sdbot/.env"]
    assert unit["User"] == ["sdbot"] and unit["StateDirectory"] == ["sdbot"]
    assert unit["WorkingDirectory"] == ["/var/lib/sdbot"], "relative paths in .env land in the state directory"
    assert unit["Restart"] == ["on-failure"]
    assert unit["RestartPreventExitStatus"] == ["2"], "a setting at fault exits 2; restarting cannot fix it"
    grace = float(unit_environment()["SDBOT_SHUTDOWN_GRACE_S"])
    assert float(unit["TimeoutStopSec"][0]) > grace
    # SIGTERM to the bot alone: the engine finishes the running job, then the bot closes its stdin.
    assert unit["KillSignal"] == ["SIGTERM"] and unit["KillMode"] == ["mixed"]


def unit_environment() -> dict[str, str]:
    """What the unit's Environment= lines set."""
    pairs = (pair.split("=", 1) for line in unit_lines()["Environment"] for pair in line.split())
    return {name: value for name, value in pairs}


def test_the_unit_asks_for_the_gpu_and_env_example_leaves_it_to_the_unit() -> None:
    assert unit_environment()["SDBOT_DEVICE"] == "cuda", "no silent fall-back to the CPU"
    # systemd reads EnvironmentFile= after Environment=: an uncommented line copied from .env.example would win.
    example = (ROOT / ".env.example").read_text()
    for name in (name for name in unit_environment() if name.startswith("SDBOT_")):
        assert not re.search(rf"^{name}=", example, re.M), f"{name} would override the unit's value"
        assert re.search(rf"^# {name}=", example, re.M), f"{name} is shown commented out, with its default"


def test_unit_is_hardened_but_leaves_the_gpu_usable() -> None:
    unit = unit_lines()
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
        "DevicePolicy": "closed",
    }.items():
        assert unit[key] == [value], key
    assert unit["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert "@system-service" in unit["SystemCallFilter"]
    # Both break PyTorch on a GPU.
    assert "MemoryDenyWriteExecute" not in unit and "PrivateDevices" not in unit


# The character devices of /proc/devices on a GPU machine, before and after NVIDIA driver 550.40 renamed major 195
# (/dev/nvidia0…, /dev/nvidiactl); the other majors are given out at load time and differ between machines.
PROC_DEVICES = {
    "driver 535": "1 mem\n4 tty\n5 /dev/tty\n10 misc\n195 nvidia-frontend\n234 nvidia-uvm\n235 nvidia-caps\n",
    "driver 550": "1 mem\n4 tty\n5 /dev/tty\n10 misc\n195 nvidia\n195 nvidiactl\n508 nvidia-uvm\n509 nvidia-caps\n",
}


def allowed_majors(proc_devices: str) -> dict[int, set[str]]:
    """What the unit's DeviceAllow=char-… lines allow per major, matched as systemd does: a glob over the names."""
    allowed: dict[int, set[str]] = {}
    for rule in unit_lines()["DeviceAllow"]:
        pattern, access = rule.split()
        assert pattern.startswith("char-"), "device groups, not paths: the paths' majors change between drivers"
        for line in proc_devices.splitlines():
            major, name = line.split(" ", 1)
            if fnmatch.fnmatchcase(name, pattern.removeprefix("char-")):
                allowed.setdefault(int(major), set()).update(access)
    return allowed


@pytest.mark.parametrize("driver", sorted(PROC_DEVICES))
def test_the_unit_allows_the_gpu_devices_of_both_driver_generations_and_nothing_else(driver: str) -> None:
    majors = {name: int(major) for major, name in (line.split(" ", 1) for line in PROC_DEVICES[driver].splitlines())}
    gpu = majors.get("nvidia", majors.get("nvidia-frontend"))
    allowed = allowed_majors(PROC_DEVICES[driver])
    # nvidia-modprobe (ExecStartPre=+) creates the GPU, control and UVM nodes: the device rules bind it too.
    assert allowed == {gpu: set("rwm"), majors["nvidia-uvm"]: set("rwm"), majors["nvidia-caps"]: set("rw")}


def test_the_unit_creates_the_uvm_device_before_the_bot_starts() -> None:
    unit = unit_lines()
    # As root outside the sandbox (NoNewPrivileges= stops CUDA running the setuid nvidia-modprobe itself), and
    # skipped where it is not installed.
    assert unit["ExecStartPre"] == ["-+/usr/bin/nvidia-modprobe -u -c=0"]
    # char-nvidia-uvm only matches if the module is loaded when the unit starts.
    assert "modprobe@nvidia_uvm.service" in unit["After"] and "modprobe@nvidia_uvm.service" in unit["Wants"]


def test_the_worker_unit_is_the_bots_hardened_unit_running_sdbot_worker_on_every_gpu() -> None:
    bot, worker = unit_lines(BOT_UNIT), unit_lines(WORKER_UNIT)
    assert worker["ExecStart"] == ["/opt/sdbot/.venv/bin/sdbot worker"]
    assert "SDBOT_DEVICE=all" in worker["Environment"]
    differ = {"Description", "ExecStart", "Environment"}
    assert {key: values for key, values in worker.items() if key not in differ} == {
        key: values for key, values in bot.items() if key not in differ
    }


def _runnable_unit(tmp_path: Path, name: str = BOT_UNIT) -> Path:
    """The unit with its paths pointed at ones that exist, as `verify` checks ExecStart is executable."""
    text = unit_text(name).replace("/opt/sdbot/.venv/bin/sdbot", shutil.which("true") or "/bin/true")
    unit = tmp_path / name
    unit.write_text(text.replace("/opt/sdbot", str(tmp_path)))
    return unit


def _systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is missing: CI must check the unit")
        pytest.skip("systemd-analyze is not installed")
    return found


@pytest.mark.parametrize("name", UNITS)
def test_unit_passes_systemd_analyze_verify(tmp_path: Path, name: str) -> None:
    unit = _runnable_unit(tmp_path, name)
    done = subprocess.run([_systemd_analyze(), "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr.strip() == "" and done.stdout.strip() == "", done.stderr


@pytest.mark.parametrize("name", UNITS)
def test_unit_exposure_is_at_most_2_5(tmp_path: Path, name: str) -> None:
    unit = _runnable_unit(tmp_path, name)
    done = subprocess.run(
        [_systemd_analyze(), "security", "--offline=true", "--threshold=25", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout[-2000:]
    exposure = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", done.stdout)[1])  # type: ignore[index]
    assert exposure <= 2.5


def test_every_setting_is_in_env_example_and_the_readme() -> None:
    code = (ROOT / "bot" / "settings.py").read_text()
    names = sorted(set(re.findall(r'"((?:SDBOT|DISCORD)_[A-Z_]+)"', code)))
    assert "DISCORD_TOKEN" in names and "SDBOT_MODEL" in names
    example = (ROOT / ".env.example").read_text()
    readme = (ROOT / "README.md").read_text()
    set_by_the_unit = set(unit_environment())
    for name in names:
        shown = f"# {name}=" if name in set_by_the_unit else f"{name}="
        assert re.search(rf"^{shown}", example, re.M), f"{name} missing from .env.example"
        assert f"| `{name}` |" in readme, f"{name} missing from the README's configuration table"


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = ci.strip().splitlines()[-1]
    # The distributed tests need a real redis-server: installed first where it is missing.
    assert command.startswith("(command -v redis-server >/dev/null || apt-get install -y -q redis-server")
    # torch first, pinned to a build on this disk with its torchvision (spandrel needs one that imports).
    assert "python3 -m venv .venv && .venv/bin/pip install -q torch==2.14.1 torchvision==0.29.1 &&" in command
    assert command in readme
