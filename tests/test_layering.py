"""Who may import what: the import-linter contracts in pyproject.toml hold, bite, and what they cannot see holds too."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "bot", "engine")

# import-linter's own entry point; it puts the working directory first on sys.path, so it reads the tree it runs in.
_LINT = "import sys\nfrom importlinter.cli import lint_imports\nsys.exit(lint_imports(no_cache=True, no_logo=True))"


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """Check the contracts of ``root``/pyproject.toml against the packages under ``root``."""
    return subprocess.run([sys.executable, "-c", _LINT], cwd=root, capture_output=True, text=True, timeout=120)


def test_the_contracts_hold() -> None:
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 kept, 0 broken" in done.stdout, done.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract", "chain"),
    [
        ("engine/worker.py", "import discord", "engine -> discord", "engine.worker -> discord"),
        ("engine/samplers.py", "import aiohttp", "engine -> aiohttp", "engine.samplers -> aiohttp"),
        ("engine/generate.py", "from bot import settings", "engine -> bot", "engine.generate -> bot.settings"),
        ("bot/pipeline/store.py", "import torch", "bot -> torch", "bot.pipeline.store -> torch"),
        ("bot/app.py", "import diffusers", "bot -> diffusers", "bot.app -> diffusers"),
        ("bot/cli.py", "from engine import generate", "bot -> engine", "bot.cli -> engine.generate"),
        ("core/params.py", "from bot import settings", "core -> bot", "core.params -> bot.settings"),
        ("core/wire.py", "import discord", "core -> discord", "core.wire -> discord"),
        ("core/infotext.py", "import transformers", "core -> transformers", "core.infotext -> transformers"),
        # Indirect: the bot reaches the engine through a core module it imports, a chain import-linter follows.
        ("core/batching.py", "import engine.loading", "bot -> engine", "core.batching -> engine.loading"),
    ],
)
def test_the_contracts_bite(tmp_path: Path, module: str, line: str, contract: str, chain: str) -> None:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    with (tmp_path / module).open("a") as source:
        source.write(f"\n{line}\n")
    done = lint_imports(tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    side, target = contract.split(" -> ")
    assert f"{side} is not allowed to import {target}:" in done.stdout, done.stdout
    assert f" {chain} (l." in done.stdout, done.stdout


# import-linter sees the imports written in these packages, not what a third-party package imports in turn, nor
# whether an import runs at import time: importing the modules proves what is loaded.
@pytest.mark.parametrize(
    ("packages", "forbidden"),
    [
        (["core"], ["torch", "transformers", "discord"]),  # transformers: the tokenizer is loaded on first use
        (["bot"], ["torch", "diffusers", "safetensors", "transformers"]),
        (["engine"], ["discord", "aiohttp"]),
    ],
)
def test_importing_a_side_leaves_the_other_out(packages: list[str], forbidden: list[str]) -> None:
    code = (
        "import importlib, pkgutil, sys\n"
        f"for name in {packages!r}:\n"
        "    package = importlib.import_module(name)\n"
        "    for info in pkgutil.walk_packages(package.__path__, name + '.'):\n"
        "        if not info.name.endswith('__main__'):\n"
        "            importlib.import_module(info.name)\n"
        f"print(sorted(m for m in {forbidden!r} if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
