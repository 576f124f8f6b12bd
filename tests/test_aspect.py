"""Aspect ratios: a shape at the model's native pixel count, as members give it in /imagine and in Remix."""

from __future__ import annotations

import pytest

from core.aspect import CHOICES, AspectRatio, take_ar_flag
from core.params import SIZE_MULTIPLE, InvalidParams


@pytest.mark.parametrize("native", [512, 768, 1024])
@pytest.mark.parametrize("ratio", CHOICES)
def test_each_offered_ratio_keeps_the_native_pixel_count_in_multiples_of_8(ratio: str, native: int) -> None:
    parsed = AspectRatio.parse(ratio)
    width, height = parsed.size(native * native, 2048)
    assert width % SIZE_MULTIPLE == 0 and height % SIZE_MULTIPLE == 0
    assert abs(width * height / native**2 - 1) < 0.05, "about the native pixel count"
    assert abs(width / height - parsed.width / parsed.height) < 0.05 * parsed.width / parsed.height


def test_known_sizes() -> None:
    assert AspectRatio.parse("16:9").size(512 * 512, 2048) == (680, 384)
    assert AspectRatio.parse(" 2 : 3 ").size(1024 * 1024, 2048) == (840, 1256)
    # Within the member's largest side, the shape kept.
    assert AspectRatio.parse("21:9").size(1024 * 1024, 1024) == (1024, 440)


@pytest.mark.parametrize(
    ("text", "sentence"),
    [
        ("16x9", "Write the aspect ratio as width:height, such as 16:9, not `16x9`."),
        ("wide", "Write the aspect ratio as width:height"),
        ("0:1", "Write the aspect ratio as width:height"),
        ("5:1", "An aspect ratio must lie between 1:4 and 4:1, not 5:1."),
        ("1:5", "An aspect ratio must lie between 1:4 and 4:1, not 1:5."),
    ],
)
def test_bad_ratios_get_a_sentence(text: str, sentence: str) -> None:
    with pytest.raises(InvalidParams) as caught:
        AspectRatio.parse(text)
    assert str(caught.value).startswith(sentence)


def test_ar_in_a_prompt_is_taken_out_of_it() -> None:
    assert take_ar_flag("a castle --ar 16:9, sunset") == ("a castle, sunset", AspectRatio(16, 9))
    assert take_ar_flag("--ar 4:1 a long train") == ("a long train", AspectRatio(4, 1))
    assert take_ar_flag("a castle") == ("a castle", None)
    assert take_ar_flag("a castle--ar 2:3") == ("a castle--ar 2:3", None), "only a flag of its own"
    with pytest.raises(InvalidParams, match="not several"):
        take_ar_flag("a --ar 1:1 b --ar 2:3")
