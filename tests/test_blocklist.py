"""The block list's matching rules, on a table of prompts owners will meet."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.policy.blocklist import BadEntry, BlockList, normalize_entry, split_entries

ENTRIES = BlockList(tuple(normalize_entry(e) for e in ("nude", "Gore", "red fox", "nud*", "blood   bath")))


@pytest.mark.parametrize(
    ("prompt", "found"),
    [
        ("a nude portrait", "nude"),
        ("NUDE", "NUDE"),
        ("(nude:1.3), masterpiece", "nude"),
        ("((Nude))", "Nude"),
        ("nüde figure", "nüde"),
        ("ｎｕｄｅ", "ｎｕｄｅ"),  # full-width letters
        ("n.u.d.e", "n.u.d.e"),
        ("n_u_d_e", "n_u_d_e"),
        ("n-u-d-e, 8k", "n-u-d-e"),
        ("nude_girl, best quality", "nude"),
        ("<lora:nudity_v2:0.8> woman", "nudity"),  # nud* matches any word starting nud
        ("so much gore", "gore"),
        ("a red fox", "red fox"),
        ("a red, fox", "red, fox"),
        ("a red_fox", "red_fox"),
        ("a bloodbath", None),  # a phrase's words need something between them
        ("a blood bath", "blood bath"),
        ("gorey", None),  # whole words: gorey is not gore
        ("gorgeous sunset", None),
        ("a nu de statue", None),  # spaces split words; only punctuation joins letters
        ("denuded hills", None),
        ("a red wolf and a fox", None),
        ("", None),
    ],
)
def test_whole_words_case_accents_and_punctuation_between_letters(prompt: str, found: str | None) -> None:
    assert ENTRIES.find(prompt) == found


def test_an_empty_list_blocks_nothing() -> None:
    assert BlockList().find("nude gore") is None


def test_the_longest_entry_is_reported() -> None:
    blocks = BlockList(("red", "red fox"))
    assert blocks.find("a red fox") == "red fox"


@pytest.mark.parametrize(
    ("raw", "entry"),
    [(" Nude ", "nude"), ("Red  Fox", "red fox"), ("x-ray", "x ray"), ("NUD*", "nud*"), ("Über", "uber")],
)
def test_entries_are_normalized(raw: str, entry: str) -> None:
    assert normalize_entry(raw) == entry


@pytest.mark.parametrize("raw", ["", "  ", "***", "...", "x" * 101])
def test_entries_without_letters_or_too_long_are_refused(raw: str) -> None:
    with pytest.raises(BadEntry):
        normalize_entry(raw)


def test_several_entries_are_separated_by_commas() -> None:
    assert split_entries(" nude, gore ,, red fox ") == ["nude", "gore", "red fox"]


@given(st.text(max_size=200))
def test_any_prompt_is_answered_without_error_and_a_match_is_in_the_prompt(prompt: str) -> None:
    found = ENTRIES.find(prompt)
    assert found is None or found in prompt


@given(st.from_regex(r"[a-z]{1,12}", fullmatch=True), st.text(alphabet=".-_*'", min_size=1, max_size=3))
def test_a_word_matches_with_punctuation_between_its_letters(word: str, separator: str) -> None:
    blocks = BlockList((normalize_entry(word),))
    assert blocks.find(f"({separator.join(word)}:1.2)") == separator.join(word)
