"""engine.describe on a tiny random BLIP: distinct prompts, and the child process's contract with the bot."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from engine.describe import MAX_PROMPT_CHARS, Captioner, as_prompt, load_captioner, main
from tests.support.device import TEST_DEVICE
from tests.support.tiny_blip import save_tiny_blip
from tests.support.tiny_safety import save_tiny_safety_checker

ROOT = Path(__file__).resolve().parent.parent


def png(colour: tuple[int, int, int] = (200, 40, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (96, 64), colour).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def tiny_blip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_blip(tmp_path_factory.mktemp("describe") / "tiny-blip")


@pytest.fixture(scope="module")
def captioner(tiny_blip: Path) -> Captioner:
    return load_captioner(tiny_blip, TEST_DEVICE)


def assert_prompts(prompts: list[str], count: int) -> None:
    assert len(prompts) == count
    assert len({p.casefold() for p in prompts}) == count
    assert all(p and p == p.strip() and len(p) <= MAX_PROMPT_CHARS for p in prompts)


def test_describe_gives_distinct_prompts_the_same_each_time(captioner: Captioner) -> None:
    image = Image.open(io.BytesIO(png())).convert("RGB")
    prompts = captioner.describe(image, 4)
    assert_prompts(prompts, 4)
    assert captioner.describe(image, 4) == prompts


def test_sampling_fills_in_when_beams_clean_up_alike(tmp_path: Path) -> None:
    # One word: the beams differ only in special tokens, which decode to nothing, so they give one caption at most;
    # with no nudge to end, samples run long enough to count different numbers of cats.
    folder = save_tiny_blip(tmp_path / "one-word", words=["cat"], end_bias=0.0)
    captioner = load_captioner(folder, TEST_DEVICE)
    image = Image.open(io.BytesIO(png())).convert("RGB")
    prompts = captioner.describe(image, 3)
    assert_prompts(prompts, 3)
    assert set(" ".join(prompts).split()) == {"cat"}


def test_a_model_with_no_words_gives_no_prompts(tmp_path: Path) -> None:
    captioner = load_captioner(save_tiny_blip(tmp_path / "no-words", words=[]), TEST_DEVICE)
    assert captioner.describe(Image.new("RGB", (32, 32)), 2) == []


@pytest.mark.parametrize(
    ("caption", "prompt"),
    [
        ("arafed man in a suit and tie", "man in a suit and tie"),
        ("there is a araffe dog on a bed", "a dog on a bed"),
        ("  a cat   sitting on a couch ", "a cat sitting on a couch"),
        ("a " * 600, ("a " * 500).strip()),
    ],
)
def test_captions_become_prompts(caption: str, prompt: str) -> None:
    assert as_prompt(caption) == prompt


def test_the_cli_prints_the_prompts_as_json(tiny_blip: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "engine.describe", "--model", str(tiny_blip), "--count", "4"],
        input=png(),
        capture_output=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert_prompts(json.loads(done.stdout)["prompts"], 4)


def run_main(argv: list[str], stdin: bytes, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    return main(argv)


def test_a_folder_that_is_not_blip_exits_2_naming_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = save_tiny_safety_checker(tmp_path / "safety-checker")
    capsys.readouterr()  # saving's progress bar
    assert run_main(["--model", str(clip)], png(), monkeypatch) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"SDBOT_DESCRIBE_MODEL: {clip} is not a BLIP captioning model folder")
    assert "StableDiffusionSafetyChecker" in err


def test_bytes_that_are_not_an_image_exit_3(
    tiny_blip: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_main(["--model", str(tiny_blip)], b"GIF89a, or so it says", monkeypatch) == 3
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("not an image")
