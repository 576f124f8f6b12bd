from __future__ import annotations

import pytest

from core.infotext import ModelInfo, format_infotext, quote
from core.params import GenerationParams

MODEL = ModelInfo(name="realisticVisionV20", hash="c0d1994c73")


def test_quote_leaves_plain_values_and_json_quotes_commas_colons_newlines() -> None:
    assert quote("DPM++ 2M") == "DPM++ 2M"
    assert quote("a, b") == '"a, b"'
    assert quote("x:y") == '"x:y"'
    assert quote("two\nlines") == '"two\\nlines"'
    assert quote('say "hi", é') == '"say \\"hi\\", é"'


def test_full_infotext_matches_a1111_layout() -> None:
    params = GenerationParams(
        prompt="a red fox, snow", negative_prompt="blurry", steps=30, cfg=7, sampler="DPM++ 2M Karras", seed=1234
    )
    assert format_infotext(params, 1234, MODEL) == (
        "a red fox, snow\n"
        "Negative prompt: blurry\n"
        "Steps: 30, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234, Size: 512x512, "
        "Model hash: c0d1994c73, Model: realisticVisionV20"
    )


def test_negative_line_omitted_when_empty_and_fractional_cfg_kept() -> None:
    params = GenerationParams(prompt="fox", sampler="Euler a", cfg=6.5, width=768, height=512, steps=20)
    assert format_infotext(params, 42, MODEL) == (
        "fox\nSteps: 20, Sampler: Euler a, CFG scale: 6.5, Seed: 42, Size: 768x512, "
        "Model hash: c0d1994c73, Model: realisticVisionV20"
    )


def test_model_name_with_comma_is_quoted() -> None:
    params = GenerationParams(prompt="fox", sampler="DDIM")
    assert format_infotext(params, 1, ModelInfo(name="mix, v2", hash="abc")).endswith('Model: "mix, v2"')


def test_clip_skip_and_resource_hashes_come_last_as_a1111_writes_them() -> None:
    params = GenerationParams(prompt="a fox <lora:detail:0.8>", seed=1, clip_skip=2)
    extras = [("Lora hashes", "detail: 0123456789ab"), ("TI hashes", "easynegative: c74b4e810b03")]
    text = format_infotext(params, 1, MODEL, extras)
    assert text.startswith("a fox <lora:detail:0.8>\nSteps: 30,")
    assert text.endswith(
        'Model: realisticVisionV20, Clip skip: 2, Lora hashes: "detail: 0123456789ab", '
        'TI hashes: "easynegative: c74b4e810b03"'
    )
    assert "Clip skip" not in format_infotext(GenerationParams(prompt="fox", clip_skip=1), 1, MODEL)


def test_a_model_without_a_hash_leaves_the_key_out_as_a1111_does() -> None:
    # A1111 (modules/processing.py create_infotext) writes only the keys whose value is not None.
    params = GenerationParams(prompt="fox", sampler="Euler a")
    text = format_infotext(params, 1, ModelInfo(name="tiny", hash=""))
    assert text == "fox\nSteps: 30, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512, Model: tiny"


@pytest.mark.parametrize(
    ("sampler", "written"),
    [
        ("DPM++ 2M Karras", "Sampler: DPM++ 2M, Schedule type: Karras, "),
        # A1111 1.9 reads DPM++ 2M without a schedule type as Karras: the plain one must name its schedule.
        ("DPM++ 2M", "Sampler: DPM++ 2M, Schedule type: SGM Uniform, "),
        ("DPM++ SDE Karras", "Sampler: DPM++ SDE, Schedule type: Karras, "),
        ("Euler a", "Sampler: Euler a, CFG scale"),
        ("Euler", "Sampler: Euler, CFG scale"),
        ("DDIM", "Sampler: DDIM, CFG scale"),
        ("UniPC", "Sampler: UniPC, CFG scale"),
    ],
)
def test_the_schedule_type_is_written_where_a1111_names_one(sampler: str, written: str) -> None:
    assert written in format_infotext(GenerationParams(prompt="fox", sampler=sampler), 1, MODEL)
