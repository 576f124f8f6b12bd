"""`sdbot generate`: one image through the same engine process, no Discord."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from PIL import Image

from engine.loading import file_hash


def test_generate_writes_pngs_with_infotext(tiny_model_dir: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SDBOT_", "DISCORD_"))}
    env.update(SDBOT_MODEL=str(tiny_model_dir), SDBOT_DEVICE="cpu")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bot",
            "generate",
            "a red fox",
            "-o",
            "fox.png",
            "--seed",
            "42",
            "--steps",
            "2",
            "--cfg",
            "5.5",
            "--sampler",
            "Euler a",
            "--negative",
            "blurry, dark",
            "--count",
            "2",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "wrote fox.png (seed 42, tiny-sd" in done.stdout
    first, second = Image.open(tmp_path / "fox.png"), Image.open(tmp_path / "fox-2.png")
    assert first.size == (64, 64)
    assert first.text["parameters"] == (
        "a red fox\nNegative prompt: blurry, dark\nSteps: 2, Sampler: Euler a, CFG scale: 5.5, Seed: 42, "
        f"Size: 64x64, Model hash: {file_hash(tiny_model_dir / 'unet' / 'diffusion_pytorch_model.safetensors')}, "
        "Model: tiny-sd"
    )
    assert "Seed: 43," in second.text["parameters"]


def test_generate_with_a_model_of_the_folder_and_its_sidecar(tiny_model_dir: Path, tmp_path: Path) -> None:
    shutil.copytree(tiny_model_dir, tmp_path / "models" / "tiny-copy")
    (tmp_path / "models" / "tiny-copy.toml").write_text("steps = 1\nwidth = 72\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SDBOT_", "DISCORD_"))}
    env.update(SDBOT_MODEL=str(tiny_model_dir), SDBOT_DEVICE="cpu")
    command = [sys.executable, "-m", "bot", "generate", "a red fox", "--seed", "1"]
    done = subprocess.run(
        [*command, "--model", "tiny-copy"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    parameters = Image.open(tmp_path / "sdbot.png").text["parameters"]
    assert "Steps: 1," in parameters and "Size: 72x64," in parameters and parameters.endswith("Model: tiny-copy")
    done = subprocess.run(
        [*command, "--model", "tiny-cpy"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert (done.returncode, done.stderr) == (
        2,
        "sdbot: There is no model called `tiny-cpy`: did you mean `tiny-copy`?\n",
    )
