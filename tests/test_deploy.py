"""The systemd unit, the settings documentation and the packaging stay true to the code."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def unit_text() -> str:
    return (ROOT / "deploy" / "sdbot.service").read_text()


def unit_lines() -> dict[str, list[str]]:
    """Each key of the unit with all its values (keys like DeviceAllow= repeat)."""
    lines: dict[str, list[str]] = {}
    for line in unit_text().splitlines():
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
    grace = float(unit["Environment"][0].split("SDBOT_SHUTDOWN_GRACE_S=")[1].split()[0])
    assert float(unit["TimeoutStopSec"][0]) > grace


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
    assert {"char-nvidia-frontend rw", "char-nvidia-uvm rw"} <= set(unit["DeviceAllow"])
    # Both break PyTorch on a GPU.
    assert "MemoryDenyWriteExecute" not in unit and "PrivateDevices" not in unit


def _runnable_unit(tmp_path: Path) -> Path:
    """The unit with its paths pointed at ones that exist, as `verify` checks ExecStart is executable."""
    text = unit_text().replace("/opt/sdbot/.venv/bin/sdbot", shutil.which("true") or "/bin/true")
    unit = tmp_path / "sdbot.service"
    unit.write_text(text.replace("/opt/sdbot", str(tmp_path)))
    return unit


def _systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is missing: CI must check the unit")
        pytest.skip("systemd-analyze is not installed")
    return found


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = _runnable_unit(tmp_path)
    done = subprocess.run([_systemd_analyze(), "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr.strip() == "" and done.stdout.strip() == "", done.stderr


def test_unit_exposure_is_at_most_2_5(tmp_path: Path) -> None:
    unit = _runnable_unit(tmp_path)
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
    for name in names:
        assert re.search(rf"^{name}=", example, re.M), f"{name} missing from .env.example"
        assert f"| `{name}` |" in readme, f"{name} missing from the README's configuration table"


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = ci.strip().splitlines()[-1]
    assert command.startswith("python3 -m venv .venv && .venv/bin/pip install -q torch==2.13.0")
    assert command in readme
