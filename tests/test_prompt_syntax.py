"""A1111's prompt syntax, parsed without torch: the table is A1111's own documented outputs."""

from __future__ import annotations

import pytest

from core.params import InvalidParams
from core.prompt_syntax import (
    LoraTag,
    check_lora_count,
    check_lora_names,
    check_network_kinds,
    parse_prompt_attention,
    split_loras,
)

# From the doctests of A1111's modules/prompt_parser.py `parse_prompt_attention`, plus BREAK and a few edges.
A1111_CASES: list[tuple[str, list[list[str | float]]]] = [
    ("normal text", [["normal text", 1.0]]),
    ("an (important) word", [["an ", 1.0], ["important", 1.1], [" word", 1.0]]),
    ("(unbalanced", [["unbalanced", 1.1]]),
    ("\\(literal\\]", [["(literal]", 1.0]]),
    ("(unnecessary)(parens)", [["unnecessaryparens", 1.1]]),
    (
        "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
        [
            ["a ", 1.0],
            ["house", 1.5730000000000004],
            [" ", 1.1],
            ["on", 1.0],
            [" a ", 1.1],
            ["hill", 0.55],
            [", sun, ", 1.1],
            ["sky", 1.4641000000000006],
            [".", 1.1],
        ],
    ),
    ("a (b:1.5) c", [["a ", 1.0], ["b", 1.5], [" c", 1.0]]),
    ("((word))", [["word", 1.2100000000000002]]),
    ("[word]", [["word", 1 / 1.1]]),
    ("[[word]]", [["word", 1 / 1.1 / 1.1]]),
    ("(word: 1.3 )", [["word", 1.3]]),
    ("unbalanced)] closers", [["unbalanced)] closers", 1.0]]),
    ("[unclosed square", [["unclosed square", 1 / 1.1]]),
    ("a \\\\ backslash", [["a \\ backslash", 1.0]]),
    ("time: 12:30", [["time: 12:30", 1.0]]),
    ("a cat BREAK a dog", [["a cat", 1.0], ["BREAK", -1.0], ["a dog", 1.0]]),
    ("(red BREAK blue)", [["red", 1.1], ["BREAK", -1.1], ["blue", 1.1]]),
    ("BREAKFAST", [["BREAKFAST", 1.0]]),
    ("", [["", 1.0]]),
]


@pytest.mark.parametrize(("prompt", "expected"), A1111_CASES)
def test_parse_prompt_attention_matches_a1111(prompt: str, expected: list[list[str | float]]) -> None:
    assert [[f.text, f.weight] for f in parse_prompt_attention(prompt)] == expected


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("a (cat:1.2.3) on a mat", "The weight in `(cat:1.2.3)` must be a number such as 1.2."),
        ("(a:.)", "The weight in `(a:.)` must be a number such as 1.2."),
        ("((cat:2) (dog:1..5))", "The weight in `(dog:1..5)` must be a number such as 1.2."),
        # Too large for a float (infinite), and quoted shortened in the middle.
        (f"(cat:1{'0' * 400})", f"The weight in `(cat:1{'0' * 23}…{'0' * 28})` must be a number such as 1.2."),
        (
            f"a ((castle on a hill at dusk:1{'0' * 200}):1{'0' * 200})",
            "Weights in nested brackets multiply past what a number holds",
        ),
    ],
)
def test_a_weight_that_is_no_number_is_named_not_raised_as_a_bare_error(prompt: str, message: str) -> None:
    # A1111's own float() raises on these (failing the whole generation); a member gets the bracket to fix.
    with pytest.raises(InvalidParams) as refused:
        parse_prompt_attention(prompt)
    assert str(refused.value).startswith(message)


def test_only_a_plain_break_marks_a_chunk_boundary() -> None:
    assert [f.is_break for f in parse_prompt_attention("a BREAK b")] == [False, True, False]
    # Inside brackets A1111's BREAK is weighted too and no longer recognised: it stays text.
    assert not any(f.is_break for f in parse_prompt_attention("(a BREAK b)"))


def test_lora_tags_are_taken_out_in_order_with_their_weights() -> None:
    text, tags = split_loras("a castle <lora:add_detail:0.8>, sunset <lora:film grain:-0.5> <lora:style>")
    assert text == "a castle , sunset  "
    assert tags == (LoraTag("add_detail", 0.8, 0.8), LoraTag("film grain", -0.5, -0.5), LoraTag("style", 1.0, 1.0))


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        # A1111's extra_networks_lora.py: positional te then unet (defaulting to te); te= and unet= by name.
        ("<lora:ink:0.8:0.5>", LoraTag("ink", 0.8, 0.5)),
        ("<lora:ink:te=0.8:unet=0.5>", LoraTag("ink", 0.8, 0.5)),
        ("<lora:ink:0.8:unet=0.5>", LoraTag("ink", 0.8, 0.5)),
        ("<lora:ink:unet=0.5>", LoraTag("ink", 1.0, 0.5)),
        ("<lora:ink:0.3:te=0.6>", LoraTag("ink", 0.6, 0.6)),
        ("<lora:ink::0.5>", LoraTag("ink", 1.0, 0.5)),
        # A1111 registers lyco as another name for lora.
        ("<lyco:ink:0.4>", LoraTag("ink", 0.4, 0.4)),
    ],
)
def test_a_lora_tag_gives_the_text_encoder_and_the_unet_their_weights_as_a1111(tag: str, expected: LoraTag) -> None:
    assert split_loras(f"a fox {tag}") == ("a fox ", (expected,))


def test_every_extra_network_tag_leaves_the_text_and_only_loras_are_allowed_in() -> None:
    # A1111 takes every <kind:…> out of the text, known or not; plain angle brackets stay words.
    assert split_loras("<hypernet:x:1> and <b> <16:9>") == (" and <b> ", ())
    check_network_kinds("a fox <lora:ink:0.8> <lyco:ink:0.2> and <b>")
    with pytest.raises(
        InvalidParams, match=r"^This bot applies LoRAs \(<lora:name:0.8>\) and no other networks: remove"
    ):
        check_network_kinds("a fox <lora:ink:0.8> <hypernet:anime:1>")
    with pytest.raises(InvalidParams, match="remove <hypernet:anime:1> from the prompt.$"):
        check_network_kinds("a fox <hypernet:anime:1>")


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("<lora:detail:strong>", r"The weight in <lora:detail:strong> must be a number"),
        ("<lora:detail:0.8:strong>", r"The weight in <lora:detail:0.8:strong> must be a number"),
        ("<lora:detail:unet=x>", r"The weight in <lora:detail:unet=x> must be a number"),
        ("<lora: :0.5>", r"names no LoRA"),
        (
            "<lora:detail:1:1:4>",
            r"^This bot applies a LoRA's weight, or its text encoder and UNet weights apart: write",
        ),
        ("<lora:detail:1:in=0.5>", r"write <lora:detail:1:in=0.5> as <lora:detail:0.8> or <lora:detail:0.8:0.5>\.$"),
    ],
)
def test_a_malformed_lora_tag_says_how_to_write_it(prompt: str, message: str) -> None:
    with pytest.raises(InvalidParams, match=message):
        split_loras(prompt)


def test_an_unknown_lora_lists_the_closest_installed_names() -> None:
    installed = ["add_detail", "add_details_xl", "epiNoiseoffset", "film_grain"]
    check_lora_names([LoraTag("add_detail", 1.0, 1.0)], installed)
    with pytest.raises(InvalidParams, match=r"^There is no LoRA named 'add_detial': did you mean add_detail or"):
        check_lora_names([LoraTag("add_detail", 1.0, 1.0), LoraTag("add_detial", 0.8, 0.8)], installed)
    with pytest.raises(InvalidParams, match="the installed ones are add_detail, add_details_xl, epiNoiseoffset"):
        check_lora_names([LoraTag("zzzz", 1.0, 1.0)], installed)
    with pytest.raises(InvalidParams, match="no LoRAs installed: remove <lora:x:…>"):
        check_lora_names([LoraTag("x", 1.0, 1.0)], [])


def test_a_repeated_lora_is_applied_once_at_the_sum_of_its_weights() -> None:
    # A1111 adds each tag's weight change to the layers, so the weights add up; one adapter at the sum is the same.
    text, tags = split_loras("<lora:ink:0.5> a fox <lora:detail> <lyco:ink:0.3:0.2> <lora:ink:te=0.1>")
    assert text == " a fox   "
    assert [(tag.name, tag.te, tag.unet) for tag in tags] == [
        ("ink", pytest.approx(0.9), pytest.approx(0.8)),
        ("detail", 1.0, 1.0),
    ]
    ((detail,),) = [split_loras("<lora:detail:0.01>" * 99)[1]]
    assert (detail.name, detail.te, detail.unet) == ("detail", pytest.approx(0.99), pytest.approx(0.99))


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("<lora:x:nan>", "The weight in <lora:x:nan> must be a number from -10 to 10: write it as <lora:x:0.8>."),
        ("<lora:x:inf>", "The weight in <lora:x:inf> must be a number from -10 to 10"),
        ("<lora:x:10.5>", "The weight in <lora:x:10.5> must be a number from -10 to 10"),
        ("<lora:x:1:-11>", "The weight in <lora:x:1:-11> must be a number from -10 to 10"),
        ("<lora:x:unet=1e400>", "The weight in <lora:x:unet=1e400> must be a number from -10 to 10"),
        (
            "<lora:x:6> a fox <lora:x:6>",
            "The weights of <lora:x> in the prompt add up to 12: keep their sum within -10 to 10, or name it once.",
        ),
        ("<lora:x:1:-6> <lora:x:1:-6>", "The weights of <lora:x> in the prompt add up to -12"),
    ],
)
def test_a_lora_weight_is_finite_and_within_ten_also_summed(prompt: str, message: str) -> None:
    with pytest.raises(InvalidParams) as refused:
        split_loras(prompt)
    assert str(refused.value).startswith(message)
    assert split_loras("<lora:x:10> <lora:x:-10:0> <lora:x:-10>")[1] == (LoraTag("x", -10.0, 0.0),)


def test_more_loras_than_the_owner_allows_are_refused() -> None:
    _text, tags = split_loras("<lora:a> <lora:b> <lora:c> <lora:a> <lora:b>")
    check_lora_count(tags, 3)
    with pytest.raises(
        InvalidParams, match="^The prompt applies 3 LoRAs and this bot applies at most 2 at once: remove 1"
    ):
        check_lora_count(tags, 2)
