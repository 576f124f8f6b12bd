"""A1111's prompt editing and alternation schedules, against A1111's own function.

tests/data/a1111_prompt_schedules.json holds what `get_learned_conditioning_prompt_schedules(prompts, steps)` returns,
run once outside this repository: the function copied verbatim from AUTOMATIC1111/stable-diffusion-webui's
modules/prompt_parser.py at commit 28bd8e142d5f77b71ae8d7d7140b5da1b3a49906, under lark 1.3.1. The cases are its
doctests without a hires pass, at 10 steps (`a [{b|d{:.5] c` pinned as the function returns it: that doctest fails
in A1111 itself), 25 hand-written edges at 5 and 20 steps, and 300 prompts from a seeded random generator (nested
edits with steps in and past range, `[a::x]`, `[:b:x]`, alternations with empty options, weights, escapes and stray
brackets, at 1, 5, 20 or 30 steps), leaving out the few past this module's limits.

tests/data/a1111_hires_prompt_schedules.json holds what the same function returns for a hires pass
(`get_learned_conditioning_prompt_schedules(prompts, first_pass, hires_steps)`, at 20 then 10 steps and at 5 then
8) for every pinned prompt at 10 or 20 steps.

A1111 pins lark 1.1.2, whose Earley picks among ambiguous parses in hash order: on 31 of these prompts (all with
stray brackets or colons) its answer changes with PYTHONHASHSEED. From lark 1.1.8 the pick is fixed, and pinned here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core import prompt_schedule as module
from core.params import InvalidParams
from core.prompt_schedule import (
    MAX_GROUP_MARKS,
    ScheduledText,
    check_schedule,
    prompt_schedule,
    text_at,
)

DATA = Path(__file__).parent / "data"
CASES = json.loads((DATA / "a1111_prompt_schedules.json").read_text(encoding="utf-8"))
HIRES_CASES = json.loads((DATA / "a1111_hires_prompt_schedules.json").read_text(encoding="utf-8"))


def test_the_pinned_cases_are_a1111s_doctests_and_enough_schedules() -> None:
    prompts = {case["prompt"] for case in CASES}
    assert {"a[b:[c:d:2]:1]e", "[fe|||]male", "((a][:b:c [d:3]"} <= prompts
    assert sum(len(case["schedule"]) > 1 for case in CASES) > 150


@pytest.mark.parametrize("case", CASES, ids=[str(i) for i in range(len(CASES))])
def test_matches_a1111(case: dict) -> None:
    got = prompt_schedule(case["prompt"], case["steps"])
    assert [[entry.end_step, entry.text] for entry in got] == case["schedule"]


@pytest.mark.parametrize("case", HIRES_CASES, ids=[str(i) for i in range(len(HIRES_CASES))])
def test_a_hires_pass_matches_a1111(case: dict) -> None:
    got = prompt_schedule(case["prompt"], case["steps"], case["first_pass"])
    assert [[entry.end_step, entry.text] for entry in got] == case["schedule"]


def test_a_hires_pass_counts_step_numbers_on_and_fractions_from_one() -> None:
    assert sum(len(case["schedule"]) > 1 for case in HIRES_CASES) > 50
    # After 20 steps, step 25 and fraction 1.5 are both step 5 of a 10-step hires pass; 0.5 and 12 are long past.
    switched = (ScheduledText(5, "cat"), ScheduledText(10, "dog"))
    assert prompt_schedule("[cat:dog:25]", 10, 20) == prompt_schedule("[cat:dog:1.5]", 10, 20) == switched
    assert (
        prompt_schedule("[cat:dog:0.5]", 10, 20)
        == prompt_schedule("[cat:dog:12]", 10, 20)
        == (ScheduledText(10, "dog"),)
    )
    check_schedule("[cat:dog:25] [a:b:1.5]", 20, 10)
    with pytest.raises(InvalidParams, match="switches at step 31, but the job draws 30 steps"):
        check_schedule("[cat:dog:31]", 20, 10)
    with pytest.raises(InvalidParams, match="switches at 1.5 of the steps, past the end"):
        check_schedule("[cat:dog:1.5]", 20)


def test_an_edit_switches_after_its_step() -> None:
    schedule = prompt_schedule("a [cat:dog:10] b", 20)
    assert schedule == (ScheduledText(10, "a cat b"), ScheduledText(20, "a dog b"))
    assert [text_at(schedule, step) for step in range(20)] == ["a cat b"] * 11 + ["a dog b"] * 9
    assert text_at(schedule, 25) == "a dog b"


def test_a_fraction_is_of_the_steps() -> None:
    assert prompt_schedule("[cat:dog:0.25]", 20) == (ScheduledText(5, "cat"), ScheduledText(20, "dog"))


def test_an_edit_at_the_last_step_never_draws_its_second_text() -> None:
    # Sampler steps count from 0, so the step after 19 of 20 never comes.
    schedule = prompt_schedule("[cat:dog:19]", 20)
    assert {text_at(schedule, step) for step in range(20)} == {"cat"}


def test_an_edit_at_step_zero_draws_only_its_second_text() -> None:
    assert prompt_schedule("[cat:dog:0]", 20) == (ScheduledText(20, "dog"),)


def test_alternation_starts_with_the_first_option_for_two_steps() -> None:
    # A1111's schedule entries start at 1 and the sampler's steps at 0: both 0 and 1 take entry 1.
    schedule = prompt_schedule("[cat|dog]", 6)
    assert [text_at(schedule, step) for step in range(6)] == ["cat", "cat", "dog", "cat", "dog", "cat"]


def test_alternation_inside_an_edit_alternates_until_the_switch() -> None:
    schedule = prompt_schedule("[[cat|dog]:bird:3]", 5)
    assert [entry.text for entry in schedule] == ["cat", "dog", "cat", "bird", "bird"]


def test_a_number_past_floats_range_is_clamped_rather_than_raised() -> None:
    # A1111 raises OverflowError from int(inf) here; check_schedule refuses it before a job is queued.
    assert prompt_schedule("[cat:dog:1e999]", 20) == (ScheduledText(20, "cat"),)


def test_check_refuses_a_step_past_the_end() -> None:
    with pytest.raises(InvalidParams) as raised:
        check_schedule("a [cat:dog:30] b", 20)
    assert str(raised.value) == (
        "`[cat:dog:30]` switches at step 30, but the job draws 20 steps: use a step up to 20,"
        " or a fraction such as 0.5."
    )


def test_check_refuses_a_fraction_past_the_end_and_quotes_the_inner_bracket() -> None:
    with pytest.raises(InvalidParams, match=r"^`\[b:c:1\.5\]` switches at 1\.5 of the steps, past the end"):
        check_schedule("[a|[b:c:1.5]] d", 20)


def test_check_shortens_a_long_bracket() -> None:
    with pytest.raises(InvalidParams) as raised:
        check_schedule(f"[{'a very long description ' * 20}:dog:30]", 20)
    assert "…" in str(raised.value)
    assert len(str(raised.value)) < 300


@pytest.mark.parametrize(
    "prompt", ["[cat:dog:20]", "[cat:dog:1.0]", "[cat:dog:0.5]", "[cat:dog:0]", "[cat:dog:-3]", "[cat|dog]", "cat"]
)
def test_check_accepts_steps_in_range(prompt: str) -> None:
    check_schedule(prompt, 20)


def test_check_accepts_what_a1111_reads_as_plain_text() -> None:
    # A `|` outside an alternation makes the whole prompt unreadable to A1111's grammar: it is drawn as written.
    assert prompt_schedule("[cat:dog:30] | bird", 20) == (ScheduledText(20, "[cat:dog:30] | bird"),)
    check_schedule("[cat:dog:30] | bird", 20)


class _NoParser:
    def parse(self, text: str) -> None:
        raise AssertionError(f"parsed {text!r}")


@pytest.mark.parametrize("prompt", ["a cat, (best:1.2)", "a [cat] (dog) [[bird]]", "\\[cat:dog:3\\]"])
def test_prompts_that_cannot_edit_skip_the_parser(monkeypatch: pytest.MonkeyPatch, prompt: str) -> None:
    monkeypatch.setattr(module, "_PARSER", _NoParser())
    assert prompt_schedule(prompt, 20) == (ScheduledText(20, prompt),)
    check_schedule(prompt, 20)


def test_a_prompt_that_edits_reaches_the_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    module._parse.cache_clear()
    monkeypatch.setattr(module, "_PARSER", _NoParser())
    with pytest.raises(AssertionError, match="parsed"):
        prompt_schedule("a prompt that reaches the parser [cat:dog:3]", 20)


class _Spy:
    def __init__(self) -> None:
        self.parser, self.seen = module._PARSER, list[str]()

    def parse(self, text: str) -> object:
        self.seen.append(text)
        return self.parser.parse(text)


def test_the_parser_sees_only_the_groups_that_may_edit(monkeypatch: pytest.MonkeyPatch) -> None:
    module._parse.cache_clear()
    spy = _Spy()
    monkeypatch.setattr(module, "_PARSER", spy)
    schedule = prompt_schedule("(best:1.2), [red] [cat:dog:2] in a [hat|cap], [x]", 4)
    assert spy.seen == ["[cat:dog:2]", "[hat|cap]"]
    assert [entry.text for entry in schedule] == [
        "(best:1.2), [red] cat in a hat, [x]",
        "(best:1.2), [red] cat in a cap, [x]",
        "(best:1.2), [red] dog in a hat, [x]",
        "(best:1.2), [red] dog in a cap, [x]",
    ]


NESTED_GROUP = "[" + "[x], " * (MAX_GROUP_MARKS // 2) + ":b:1]"


@pytest.mark.parametrize(
    ("prompt", "refusal"),
    [
        ("[" * 3000, None),
        ("[a:" * 2000, None),
        ("\\[" * 3000, None),
        ("|" * 6000, None),
        ("[a|" * 2000, "has no pair"),
        ("(" * 1000 + " [a:b:1]" * 600, "has no pair"),
        ("[a:" * 750 + "b:1]" * 750, "too many brackets"),
        ("[a:b:1]" * 850, "too many brackets"),
        ("[a|b]" * 1200, "too many brackets"),
        (NESTED_GROUP, "too many brackets"),
    ],
)
def test_hostile_prompts_are_drawn_as_written(prompt: str, refusal: str | None) -> None:
    assert prompt_schedule(prompt, 100) == (ScheduledText(100, prompt),)
    if refusal is None:
        check_schedule(prompt, 100)
    else:
        with pytest.raises(InvalidParams, match=refusal):
            check_schedule(prompt, 100)


def test_a_long_prompt_of_small_edits_is_scheduled() -> None:
    prompt = "(masterpiece:1.2), [cat|dog], [red:blue:0.5], " * 20
    schedule = prompt_schedule(prompt, 20)
    assert len(schedule) == 20
    assert text_at(schedule, 0).startswith("(masterpiece:1.2), cat, red, ")
    assert text_at(schedule, 18).startswith("(masterpiece:1.2), dog, blue, ")
    assert text_at(schedule, 19).startswith("(masterpiece:1.2), cat, blue, ")
