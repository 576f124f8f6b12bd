from __future__ import annotations

import pytest

from core.params import MAX_SEED, GenerationParams, InvalidParams


def test_defaults_are_valid() -> None:
    assert GenerationParams(prompt="a red fox").validate().sampler == "DPM++ 2M Karras"


def test_seeds_count_up_and_wrap_at_2_32() -> None:
    assert GenerationParams(prompt="x", seed=5, count=3).seeds() == (5, 6, 7)
    assert GenerationParams(prompt="x", seed=MAX_SEED, count=2).seeds() == (MAX_SEED, 0)


@pytest.mark.parametrize(
    ("changes", "sentence"),
    [
        ({"prompt": "   "}, "The prompt is empty: describe what you want to see."),
        ({"width": 500}, "The width must be a multiple of 8: try 496 or 504 instead of 500."),
        ({"height": 2048}, "The height must be between 64 and 1536 pixels, not 2048."),
        ({"steps": 0}, "Steps must be between 1 and 100, not 0."),
        ({"cfg": 31.5}, "CFG scale must be between 1 and 30, not 31.5."),
        ({"sampler": "LMS"}, "Unknown sampler 'LMS'"),
        ({"seed": -1}, "The seed must be between 0 and 4294967295, not -1."),
        ({"count": 5}, "You can ask for 1 to 4 images at once, not 5."),
        ({"negative_prompt": "x" * 1501}, "The negative prompt is 1501 characters long: shorten it to 1500"),
    ],
)
def test_invalid_params_say_what_to_change(changes: dict[str, object], sentence: str) -> None:
    params = GenerationParams(prompt="a red fox")
    with pytest.raises(InvalidParams) as caught:
        GenerationParams(**{**params.to_dict(), **changes}).validate()  # type: ignore[arg-type]
    assert str(caught.value).startswith(sentence)


def test_round_trips_through_dict_and_ignores_unknown_keys() -> None:
    params = GenerationParams(
        prompt="p", negative_prompt="n", width=640, height=448, steps=12, cfg=4.5, seed=9, count=2
    )
    assert GenerationParams.from_dict({**params.to_dict(), "from_a_newer_version": 1}) == params


def test_clip_skip_defaults_to_the_model_and_is_bounded() -> None:
    # Rows stored before clip skip existed load with the model's default.
    old = {k: v for k, v in GenerationParams(prompt="fox").to_dict().items() if k != "clip_skip"}
    assert GenerationParams.from_dict(old).clip_skip == 0
    assert GenerationParams.from_dict(GenerationParams(prompt="fox", clip_skip=2).to_dict()).clip_skip == 2
    with pytest.raises(InvalidParams, match="Clip skip must be between 1 and 12, not 13."):
        GenerationParams(prompt="fox", clip_skip=13).validate()


def test_rows_from_before_models_use_the_default_model() -> None:
    old_row = GenerationParams(prompt="fox").to_dict()
    del old_row["model"]
    assert GenerationParams.from_dict(old_row).model == ""
    assert GenerationParams.from_dict(GenerationParams(prompt="fox", model="dreamshaper_8").to_dict()).model == (
        "dreamshaper_8"
    )
