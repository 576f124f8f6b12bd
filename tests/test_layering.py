"""bot/ never imports torch; engine/ never imports discord (DESIGN.md)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("modules", "forbidden"),
    [
        (["bot.cli", "bot.app", "bot.imagine.command", "bot.pipeline.dispatch", "bot.pipeline.engine_client"], "torch"),
        (["engine.worker", "engine.generate", "engine.loading", "core.wire"], "discord"),
    ],
)
def test_packages_keep_to_their_side(modules: list[str], forbidden: str) -> None:
    code = f"import sys\nfor m in {modules!r}: __import__(m)\nprint({forbidden!r} in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
