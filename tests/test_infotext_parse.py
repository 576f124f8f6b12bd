"""Reading A1111 infotext back: A1111's own layout and quoting, round-tripped with format_infotext."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.infotext import (
    ModelInfo,
    format_infotext,
    parse_infotext,
    parse_pairs,
    quote,
    sampler_name,
    scan_pairs,
    unquote,
)
from core.params import MAX_SEED, SAMPLERS, GenerationParams, InvalidParams

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
    # A hires fix is run (its strength is A1111's Denoising strength; its upscaler A1111's default, Latent).
    assert info.unknown_keys == ("Model hash", "Model", "Lora hashes", "Version")
    params = info.to_params(BASE)
    assert (params.steps, params.sampler, params.cfg, params.seed) == (28, "DPM++ 2M Karras", 6.5, 3141592653)
    assert (params.width, params.height, params.mode) == (640, 448, "txt2img")
    assert (params.hires, params.hires_strength, params.hires_upscaler, params.output_size) == (
        2.0,
        0.4,
        "Latent",
        (1280, 896),
    )


@pytest.mark.parametrize(
    ("sampler", "schedule", "ours"),
    [
        # From A1111 1.9 on, Automatic (or no schedule type) is each sampler's default: Karras for DPM++ 2M and
        # DPM++ SDE, the model's own sigmas (Uniform) for Euler (modules/sd_samplers_kdiffusion.py).
        ("DPM++ 2M", "", "DPM++ 2M Karras"),
        ("DPM++ 2M", "Automatic", "DPM++ 2M Karras"),
        ("DPM++ 2M", "karras", "DPM++ 2M Karras"),
        ("DPM++ 2M", "SGM Uniform", "DPM++ 2M"),
        ("DPM++ 2M", "sgm_uniform", "DPM++ 2M"),
        ("DPM++ 2M", "SGMUniform", "DPM++ 2M"),
        ("DPM++ 2M Karras", "", "DPM++ 2M Karras"),
        ("DPM++ 2M Karras", "Automatic", "DPM++ 2M Karras"),
        ("DPM++ SDE", "", "DPM++ SDE Karras"),
        ("Euler", "Uniform", "Euler"),
        ("Euler a", "", "Euler a"),
        # Timestep samplers ignore the schedule type (modules/sd_samplers_timesteps.py).
        ("DDIM", "Karras", "DDIM"),
        ("UniPC", "Exponential", "UniPC"),
        ("DDIM", "", "DDIM"),
    ],
)
def test_a1111_samplers_and_schedules_map_to_ours(sampler: str, schedule: str, ours: str) -> None:
    assert sampler_name(sampler, schedule) == ours


@pytest.mark.parametrize(
    ("sampler", "schedule"),
    [
        ("DPM++ 2M", "Uniform"),
        ("DPM++ 2M", "Exponential"),
        ("Euler", "Karras"),
        ("Euler a", "SGM Uniform"),
        ("DPM++ 2M", "Sometimes"),
        ("DPM++ SDE", "SGM Uniform"),
        ("LMS", ""),
        ("DPM++ 2M SDE", "Karras"),
    ],
)
def test_samplers_and_schedules_we_do_not_draw_are_refused(sampler: str, schedule: str) -> None:
    with pytest.raises(InvalidParams, match=r"^I can't run the sampler .*: choose one of Euler a, Euler, DPM\+\+ 2M,"):
        sampler_name(sampler, schedule)


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
        # int() refuses more than 4,300 digits (and is slow well before): such values never reach it.
        ("Steps: 20, Sampler: Euler, CFG scale: 7, Size: 1x" + "9" * 5000, "Size must be written as WIDTHxHEIGHT"),
        ("Steps: " + "9" * 5000 + ", Sampler: Euler, CFG scale: 7", "Steps must be a number of at most 20 characters"),
        ("Steps: 20, Seed: " + "9" * 5000 + ", CFG scale: 7", "Seed must be a number of at most 20 characters"),
        ("Steps: 20, Seed: 1, CFG scale: " + "9" * 400, "CFG scale must be a number of at most 20 characters"),
        ("Steps: 20, Seed: 1, CFG scale: 7, Sampler: " + "x" * 9000, "I can't run the sampler xxxxxxxx"),
        ("Steps: 20, Sampler: Euler, Schedule type: " + "x" * 9000 + ", CFG scale: 7", "I can't run the sampler Euler"),
    ],
)
def test_settings_this_bot_cannot_run_get_a_sentence(line: str, sentence: str) -> None:
    info = parse_infotext(f"fox\n{line}")
    assert info is not None
    with pytest.raises(InvalidParams) as caught:
        info.to_params(BASE)
    assert str(caught.value).startswith(sentence)
    assert len(str(caught.value)) < 200, "a sentence quotes a value only in part"


def test_text_without_a_parameters_line_is_not_infotext() -> None:
    assert parse_infotext("") is None
    assert parse_infotext("just a caption") is None
    assert parse_infotext("a photo\nCamera: X100, Lens: 23mm") is None, "fewer than three pairs, as A1111 reads it"


@pytest.mark.parametrize(
    "text",
    [
        A1111 + "\n",
        A1111 + "\n\n",
        A1111 + "\n \n",
        A1111.replace("\n", "\r\n"),
        A1111.replace("\n", "\r\n") + "\r\n",
        "\n  " + A1111.replace("\n", "  \n  ") + "  ",
    ],
)
def test_line_ends_blank_lines_and_padding_are_stripped_as_a1111_strips_them(text: str) -> None:
    info = parse_infotext(text)
    assert info is not None
    assert info.prompt == "masterpiece, a red fox in the snow\nwith two lines"
    assert info.negative_prompt == "blurry, (watermark:1.2)"
    assert (info.get("Steps"), info.get("Version")) == ("28", "v1.10.1")


def test_a_quoted_last_value_followed_by_a_space_is_read_whole() -> None:
    info = parse_infotext('fox\nSteps: 20, Sampler: Euler, CFG scale: 7, Lora hashes: "fox: 12, snow: 34" ')
    assert info is not None and info.get("Lora hashes") == "fox: 12, snow: 34"


# A1111's reader, its prompt and parameter parts (modules/infotext_utils.py parse_generation_parameters): the
# whole text and each prompt line stripped, every line that starts with "Negative prompt:" losing that prefix,
# and lines joined onto what came before only once something has (so leading blank lines vanish).
A1111_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def a1111_read(x: str) -> tuple[str, str, list[tuple[str, str]]] | None:
    prompt = negative_prompt = ""
    done_with_prompt = False
    *lines, lastline = x.strip().split("\n")
    if len(A1111_PARAM.findall(lastline)) < 3:
        return None  # A1111 reads it all as prompt; this bot says the image has no parameters
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            done_with_prompt = True
            line = line[16:].strip()
        if done_with_prompt:
            negative_prompt += ("" if negative_prompt == "" else "\n") + line
        else:
            prompt += ("" if prompt == "" else "\n") + line
    return prompt, negative_prompt, A1111_PARAM.findall(lastline)


infotext_like = st.lists(
    st.one_of(
        st.sampled_from(["", " ", "\r", "Negative prompt:", "Negative prompt: x ", "Steps: 1, Seed: 2, Size: 8x8"]),
        st.text(st.sampled_from(' \t\r\u3000ab,:"\\-/'), max_size=12),
    ),
    max_size=6,
).map("\n".join)


@given(text=infotext_like)
def test_prompts_read_as_a1111_reads_them(text: str) -> None:
    expected = a1111_read(text)
    info = parse_infotext(text)
    if expected is None:
        assert info is None
    else:
        assert info is not None and (info.prompt, info.negative_prompt) == expected[:2]


keys = st.text(st.sampled_from("Stepsa Z_9é-/ "), min_size=1, max_size=12)
values = st.text(st.sampled_from('ab 7.,:"\\\n\té{}'), max_size=12)


@given(pairs=st.lists(st.tuples(keys, values), max_size=6), tail=st.sampled_from(["", " ", ",", "\n", ' "']))
def test_scan_pairs_finds_what_a1111s_pattern_finds_in_infotexts(pairs: list[tuple[str, str]], tail: str) -> None:
    line = ", ".join(f"{key}: {quote(value)}" for key, value in pairs) + tail
    assert scan_pairs(line) == A1111_PARAM.findall(line)


@given(line=st.text(st.sampled_from('ab_1é-/ \t\n\u3000:,"\\'), max_size=40))
def test_scan_pairs_finds_what_a1111s_pattern_finds_in_any_text(line: str) -> None:
    assert scan_pairs(line) == A1111_PARAM.findall(line)


@pytest.mark.parametrize(
    "line",
    [
        "a" * 16384,  # no colon: A1111's pattern retries the key from every letter (about 4 s here)
        "Steps: " + "a " * 8188,  # no comma
        " " * 16384,
        'k: "x, ' * 2340,  # quotes that never close
        'Steps: 1, Seed: "' + "\\" * 8000 + '"',
        "Steps: 1, " * 1638,
    ],
)
def test_a_16_kib_line_is_read_in_linear_time(line: str) -> None:
    started = time.perf_counter()
    parse_pairs(line)
    assert time.perf_counter() - started < 0.5, "a few milliseconds on one core; 0.5 s leaves room for load"


def test_quote_and_unquote_are_inverse_for_awkward_values() -> None:
    for value in ['"quoted"', " padded ", 'a "b" c', "x:y", "", "π, ünïcode\n"]:
        assert unquote(quote(value)) == value
        (pair,) = parse_pairs(f"Key: {quote(value)}")
        assert pair == ("Key", value)


lines = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r"), max_size=60)
# Prompts A1111 reads back as written: no padding around a line and no blank first line (both stripped, as above).
prompts = lines.map(lambda t: "\n".join(line.strip() for line in t.split("\n")).lstrip("\n")).filter(
    lambda t: not any(line.startswith("Negative prompt:") for line in t.split("\n"))
)


@given(
    prompt=prompts.filter(str.strip),
    negative=prompts,
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
