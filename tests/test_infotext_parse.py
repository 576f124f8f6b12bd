"""Reading A1111 infotext back: A1111's own layout and quoting, round-tripped with format_infotext."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.infotext import ModelInfo, format_infotext, parse_infotext, parse_pairs, quote, unquote
from engine.params import MAX_SEED, SAMPLERS, GenerationParams, InvalidParams

BASE = GenerationParams(prompt="")

A1111 = (
    "masterpiece, a red fox in the snow\n"
    "with two lines\n"
    "Negative prompt: blurry, (watermark:1.2)\n"
    "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 3141592653, Size: 640x448, "
    "Model hash: c0d1994c73, Model: realisticVisionV20, Denoising strength: 0.4, Hires upscale: 2, "
    'Lora hashes: "fox: 1234abcd, snow: 99ff00aa", Version: v1.10.1'
)


def test_reads_a1111_infotext_with_unknown_keys_and_quoted_values() -> None:
    info = parse_infotext(A1111)
    assert info is not None
    assert info.prompt == "masterpiece, a red fox in the snow\nwith two lines"
    assert info.negative_prompt == "blurry, (watermark:1.2)"
    assert info.get("Lora hashes") == "fox: 1234abcd, snow: 99ff00aa"
    assert info.unknown_keys == (
        "Model hash",
        "Model",
        "Denoising strength",
        "Hires upscale",
        "Lora hashes",
        "Version",
    )
    params = info.to_params(BASE)
    assert (params.steps, params.sampler, params.cfg, params.seed) == (28, "DPM++ 2M Karras", 6.5, 3141592653)
    assert (params.width, params.height, params.mode) == (640, 448, "txt2img")


def test_older_a1111_sampler_names_and_automatic_schedule_are_understood() -> None:
    old = parse_infotext("fox\nSteps: 20, Sampler: DPM++ SDE Karras, CFG scale: 7, Seed: 1, Size: 512x512")
    assert old is not None and old.to_params(BASE).sampler == "DPM++ SDE Karras"
    auto = parse_infotext("fox\nSteps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 1")
    assert auto is not None and auto.to_params(BASE).sampler == "Euler a"


@pytest.mark.parametrize(
    ("line", "sentence"),
    [
        ("Steps: 20, Sampler: LMS, CFG scale: 7, Seed: 1", "I can't run the sampler LMS: choose one of"),
        ("Steps: 20, Sampler: Euler, Schedule type: Exponential, CFG scale: 7", "I can't run the sampler Euler"),
        ("Steps: 20, Sampler: Euler, CFG scale: 7, Size: 500x512", "The width must be a multiple of 8"),
        ("Steps: many, Sampler: Euler, CFG scale: 7", "Steps must be a number, not 'many'."),
        ("Steps: 20, Sampler: Euler, CFG scale: 7, Size: big", "Size must be written as WIDTHxHEIGHT"),
    ],
)
def test_settings_this_bot_cannot_run_get_a_sentence(line: str, sentence: str) -> None:
    info = parse_infotext(f"fox\n{line}")
    assert info is not None
    with pytest.raises(InvalidParams) as caught:
        info.to_params(BASE)
    assert str(caught.value).startswith(sentence)


def test_text_without_a_parameters_line_is_not_infotext() -> None:
    assert parse_infotext("") is None
    assert parse_infotext("just a caption") is None
    assert parse_infotext("a photo\nCamera: X100, Lens: 23mm") is None, "fewer than three pairs, as A1111 reads it"


def test_quote_and_unquote_are_inverse_for_awkward_values() -> None:
    for value in ['"quoted"', " padded ", 'a "b" c', "x:y", "", "π, ünïcode\n"]:
        assert unquote(quote(value)) == value
        (pair,) = parse_pairs(f"Key: {quote(value)}")
        assert pair == ("Key", value)


lines = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r"), max_size=60)


@given(
    prompt=lines.filter(lambda t: t.strip() and not any(ln.startswith("Negative prompt:") for ln in t.split("\n"))),
    negative=lines,
    sampler=st.sampled_from(SAMPLERS),
    steps=st.integers(1, 100),
    cfg=st.integers(2, 60).map(lambda half: half / 2),
    seed=st.integers(0, MAX_SEED),
    width=st.integers(8, 192).map(lambda n: n * 8),
    height=st.integers(8, 192).map(lambda n: n * 8),
    model=lines,
    model_hash=st.text("0123456789abcdef", min_size=10, max_size=10),
)
def test_format_then_parse_gives_back_every_setting(
    prompt: str,
    negative: str,
    sampler: str,
    steps: int,
    cfg: float,
    seed: int,
    width: int,
    height: int,
    model: str,
    model_hash: str,
) -> None:
    params = GenerationParams(
        prompt=prompt,
        negative_prompt=negative,
        sampler=sampler,
        steps=steps,
        cfg=cfg,
        seed=seed,
        width=width,
        height=height,
    )
    text = format_infotext(params, seed, ModelInfo(name=model, hash=model_hash))
    info = parse_infotext(text)
    assert info is not None
    assert info.to_params(BASE) == params
    assert (info.get("Model"), info.get("Model hash")) == (model, model_hash)
