"""engine.tagger on a tiny real ONNX tagger: the Space's preprocessing, the threshold ladder, tags as prompt text, and
the child process's contract with the bot when SDBOT_DESCRIBE_MODEL is a WD14 tagger."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.prompt_syntax import parse_prompt_attention
from engine.describe import MAX_PROMPT_CHARS
from engine.tagger import (
    CHARACTER_THRESHOLD,
    GENERAL_THRESHOLDS,
    Category,
    Tagger,
    TaggerError,
    load_tagger,
    prompt_tag,
)
from tests.support.tiny_tagger import SIDE, TAGS, TinyTag, logit, save_tiny_tagger, tiny_scores
from tests.test_describe_engine import run_main

ROOT = Path(__file__).resolve().parent.parent
RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)
MIKU, O_O = "hatsune miku", r"\(o\)_\(o\)"


def solid(colour: tuple[int, int, int], size: tuple[int, int] = (SIDE, SIDE)) -> Image.Image:
    return Image.new("RGB", size, colour)


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def load(folder: Path, max_chars: int = MAX_PROMPT_CHARS) -> Tagger:
    return load_tagger(folder, gpu=None, threads=1, max_chars=max_chars)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_tagger(tmp_path_factory.mktemp("describe") / "tiny-tagger")


@pytest.fixture(scope="module")
def tagger(folder: Path) -> Tagger:
    return load(folder)


def test_red_and_blue_get_their_own_tags_on_a_ladder_of_thresholds(tagger: Tagger) -> None:
    # A pure red image is pure red only once the RGB pixels are fed as the BGR the model was trained on.
    assert tagger.describe(solid(RED), 4) == [
        "red theme, 1girl",  # above 0.5
        "red theme, 1girl, ^_^",  # 0.35
        r"red theme, 1girl, ^_^, star \(symbol\)",  # 0.25
        rf"red theme, 1girl, ^_^, star \(symbol\), {O_O}",  # 0.15
    ]
    # The sure character first; 0.25 lets in nothing 0.35 did not, so the ladder gives three different prompts.
    assert tagger.describe(solid(BLUE), 4) == [
        f"{MIKU}, blue theme, 1girl",
        f"{MIKU}, blue theme, 1girl, ^_^",
        f"{MIKU}, blue theme, 1girl, ^_^, {O_O}",
    ]


def ladder(tagger: Tagger, scores: np.ndarray) -> list[str]:
    """The prompts the thresholds make of these scores, worked out tag by tag."""
    ranked = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    characters = [i for i in ranked if tagger.categories[i] == Category.CHARACTER and scores[i] > CHARACTER_THRESHOLD]
    prompts: list[str] = []
    for threshold in GENERAL_THRESHOLDS:
        general = [i for i in ranked if tagger.categories[i] == Category.GENERAL and scores[i] > threshold]
        prompt = ", ".join(tagger.tags[i] for i in characters + general)
        if prompt and prompt not in prompts:
            prompts.append(prompt)
    return prompts


@pytest.mark.parametrize(
    ("colour", "size"),
    [(RED, (SIDE, SIDE)), (BLUE, (SIDE, SIDE)), ((200, 40, 30), (96, 64)), ((30, 60, 220), (40, 100)), (WHITE, (8, 8))],
)
def test_the_prompts_follow_the_models_own_scores(
    folder: Path, tagger: Tagger, colour: tuple[int, int, int], size: tuple[int, int]
) -> None:
    image = solid(colour, size)
    prompts = tagger.describe(image, 4)
    assert prompts == ladder(tagger, tagger.scores(image))
    assert prompts and len(set(prompts)) == len(prompts)
    assert not any("explicit" in p for p in prompts)  # a rating, sure as it is
    assert tagger.describe(image, 4) == prompts
    assert load(folder).describe(image, 4) == prompts  # a fresh load too


def test_the_image_is_prepared_as_the_wd_tagger_space_prepares_it(tagger: Tagger) -> None:
    # Red on the left, green on the right, wide: padded top and bottom on white, bicubic to 32 × 32, BGR.
    image = Image.new("RGB", (90, 40), RED)
    image.paste((0, 255, 0), (45, 0, 90, 40))
    square = Image.new("RGB", (90, 90), WHITE)
    square.paste(image, (0, 25))
    bgr = np.asarray(square.resize((SIDE, SIDE), Image.Resampling.BICUBIC), dtype=np.float64)[:, :, ::-1]
    np.testing.assert_allclose(tagger.scores(image), tiny_scores(TAGS, bgr.mean(axis=(0, 1))), rtol=1e-5)


def test_padding_is_white_not_a_stretch(tagger: Tagger) -> None:
    names = list(tagger.tags)
    square, wide = tagger.scores(solid(RED)), tagger.scores(solid(RED, (64, 16)))
    white = names.index("white background")
    assert square[white] < 0.01
    assert wide[white] > 0.9  # three quarters of the square is white padding
    assert "white background" in tagger.describe(solid(RED, (64, 16)), 1)[0]


def test_bgr_order(tagger: Tagger) -> None:
    names = list(tagger.tags)
    red = tagger.scores(solid(RED))
    assert red[names.index("red theme")] > 0.99
    assert red[names.index("blue theme")] < 0.01
    assert red[names.index(MIKU)] < 0.01


def test_count_takes_the_surest_prompts_first(tagger: Tagger) -> None:
    assert tagger.describe(solid(RED), 2) == tagger.describe(solid(RED), 4)[:2]
    assert tagger.describe(solid(RED), 10) == tagger.describe(solid(RED), 4)  # the ladder has four rungs


def test_no_tag_sure_enough_gives_no_prompts(tmp_path: Path) -> None:
    unsure = [TinyTag("safe", Category.RATING, bias=5.0), TinyTag("cat", Category.GENERAL, bias=logit(0.1))]
    assert load(save_tiny_tagger(tmp_path / "unsure", unsure)).describe(solid(RED), 4) == []


def test_an_unsure_character_stays_out(tmp_path: Path) -> None:
    tags = [TinyTag("hatsune_miku", Category.CHARACTER, bias=logit(0.8)), TinyTag("1girl", Category.GENERAL, bias=3)]
    assert load(save_tiny_tagger(tmp_path / "unsure-miku", tags)).describe(solid(RED), 4) == ["1girl"]


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("long_hair", "long hair"),
        ("star_(symbol)", r"star \(symbol\)"),
        ("hatsune_miku_(cosplay)", r"hatsune miku \(cosplay\)"),
        ("^_^", "^_^"),
        ("<|>_<|>", "<|>_<|>"),
        ("(o)_(o)", r"\(o\)_\(o\)"),
        ("\\m/", r"\\m/"),
        ("[]_[]", r"\[\] \[\]"),
    ],
)
def test_tags_as_prompt_text(name: str, text: str) -> None:
    assert prompt_tag(name) == text
    # The prompt parser reads it back as the tag's own words at weight 1, no emphasis.
    (fragment,) = parse_prompt_attention(text)
    assert fragment.weight == 1.0
    assert fragment.text == (name if name in ("^_^", "<|>_<|>", "(o)_(o)") else name.replace("_", " "))


def test_a_prompt_stops_at_the_last_tag_that_fits(tmp_path: Path) -> None:
    # Sixty sure tags of 30 characters: far past the cap at every threshold, so the ladder gives one prompt.
    tags = [TinyTag(f"tag_number_{i:02d}_" + "x" * 16, Category.GENERAL, bias=6 - i / 20) for i in range(60)]
    prompts = load(save_tiny_tagger(tmp_path / "long", tags)).describe(solid(RED), 4)
    assert len(prompts) == 1
    pieces = prompts[0].split(", ")
    assert pieces == [prompt_tag(tag.name) for tag in tags[: len(pieces)]]  # whole tags, surest first
    assert len(prompts[0]) <= MAX_PROMPT_CHARS < len(prompts[0]) + len(", ") + len(prompt_tag(tags[len(pieces)].name))


def test_the_cli_prints_the_tags_as_json(folder: Path, tagger: Tagger) -> None:
    image = solid((200, 40, 30), (96, 64))
    done = subprocess.run(
        [sys.executable, "-m", "engine.describe", "--model", str(folder), "--count", "3"],
        input=png(image),
        capture_output=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert json.loads(done.stdout) == {"prompts": tagger.describe(image, 3)}


def test_main_describes_with_a_tagger(
    folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_main(["--model", str(folder), "--count", "2"], png(solid(RED)), monkeypatch) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == {"prompts": ["red theme, 1girl", "red theme, 1girl, ^_^"]}
    assert err == ""


def drop_last_row(folder: Path) -> None:
    csv = folder / "selected_tags.csv"
    csv.write_text("".join(csv.read_text().splitlines(keepends=True)[:-1]))


def spoil(folder: Path, how: str) -> str:
    """Spoil a tagger folder one way; the reason its refusal gives."""
    if how == "rows":
        drop_last_row(folder)
        return f"selected_tags.csv lists {len(TAGS) - 1} tags but model.onnx gives {len(TAGS)} scores"
    if how == "columns":
        (folder / "selected_tags.csv").write_text("id,tag\n0,1girl\n")
        return "selected_tags.csv has no name and category columns"
    if how == "category":
        (folder / "selected_tags.csv").write_text("tag_id,name,category,count\n0,1girl,general,5\n")
        return "selected_tags.csv line 2 is not a tag with a numeric category"
    if how == "garbage":
        (folder / "model.onnx").write_bytes(b"<!doctype html> this is the download page, not the model")
        return "cannot load model.onnx ("
    if how == "nchw":
        save_tiny_tagger(folder, channels_last=False)
        return "model.onnx takes tensor(float) ['batch', 3, 32, 32], not one [batch, height, width, 3] float image"
    (folder / "selected_tags.csv").unlink()
    return "it has no selected_tags.csv"


@pytest.mark.parametrize("how", ["rows", "columns", "category", "garbage", "nchw", "no csv"])
def test_a_broken_tagger_exits_2_in_one_line(
    how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = save_tiny_tagger(tmp_path / "tagger")
    reason = spoil(folder, how)
    assert run_main(["--model", str(folder)], png(solid(RED)), monkeypatch) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"SDBOT_DESCRIBE_MODEL: {folder} is not a WD14 tagger folder (")
    assert reason in err


def test_scores_that_do_not_match_the_tags_fail_the_run(tagger: Tagger) -> None:
    # Where a graph leaves its number of scores unnamed, the mismatch shows only when the model runs.
    fewer = replace(tagger, tags=tagger.tags[:-1], categories=tagger.categories[:-1])
    with pytest.raises(
        TaggerError, match=rf"model.onnx gave scores shaped \[1, {len(TAGS)}\] for {len(TAGS) - 1} tags"
    ):
        fewer.describe(solid(RED), 4)
