"""The systemd unit, the settings documentation and the packaging stay true to the code."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def unit_lines() -> dict[str, str]:
    text = (ROOT / "deploy" / "sdbot.service").read_text()
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))


def test_unit_runs_the_console_script_as_its_own_user_and_restarts_on_failure() -> None:
    unit = unit_lines()
    assert unit["ExecStart"].endswith("/.venv/bin/sdbot")
    assert unit["EnvironmentFile"].endswith("/.env")
    assert unit["User"] == "sdbot"
    assert unit["Restart"] == "on-failure"
    assert unit["RestartPreventExitStatus"] == "2", "a setting at fault exits 2; restarting cannot fix it"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify checks that ExecStart exists and is executable, so point the paths at ones that do.
    text = (ROOT / "deploy" / "sdbot.service").read_text()
    text = text.replace("/opt/sdbot/.venv/bin/sdbot", shutil.which("true") or "/bin/true")
    text = text.replace("/opt/sdbot", str(tmp_path))
    unit = tmp_path / "sdbot.service"
    unit.write_text(text)
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr.strip() == "" and done.stdout.strip() == "", done.stderr


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
