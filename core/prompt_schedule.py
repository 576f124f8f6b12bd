"""A1111's prompt editing (`[cat:dog:0.5]`) and alternation (`[cat|dog]`): the text each sampler step conditions on.

A port of `get_learned_conditioning_prompt_schedules` from AUTOMATIC1111/stable-diffusion-webui's
modules/prompt_parser.py (commit 28bd8e1, the version with `use_old_scheduling`), for one prompt and no hires pass:
its lark grammar verbatim, its numbers (with a `.`, a fraction of the steps; without, a step; either at most the
steps), and its answer to a prompt the grammar cannot read: the whole prompt, unchanged, at every step.

Earley's time grows steeply with the brackets it is given (A1111 was still parsing `[` * 3000 after ten
minutes), so lark gets only the bracket groups that can edit or alternate, each on its own. Where every bracket pairs
with one of its kind, the prompt is cut where none is open: no pair reaches across such a cut, and a group parses as
in the whole prompt (checked against A1111's own function on thousands of random prompts). Where one does not pair,
Earley may read a stray differently in context, so lark gets the whole prompt. Past the limits below the prompt is
used as written, like one A1111 cannot read, and `check_schedule` says so.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import lark

from core.params import InvalidParams
from core.prompt_syntax import quoted

# A1111's grammar as written; Earley (lark's default) is part of its meaning, as it picks among ambiguous parses.
_PARSER = lark.Lark(
    r"""
!start: (prompt | /[][():]/+)*
prompt: (emphasized | scheduled | alternate | plain | WHITESPACE)*
!emphasized: "(" prompt ")"
        | "(" prompt ":" prompt ")"
        | "[" prompt "]"
scheduled: "[" [prompt ":"] prompt ":" [WHITESPACE] NUMBER [WHITESPACE] "]"
alternate: "[" prompt ("|" [prompt])+ "]"
WHITESPACE: /\s+/
plain: /([^\\\[\]():|]|\\.)+/
%import common.SIGNED_NUMBER -> NUMBER
""",
    propagate_positions=True,  # to quote a bracket back to the member
)
# What a group needs to hold an edit (`:` number `]`, as the grammar's NUMBER reads) or an alternation (`|`).
_MAY_SCHEDULE = re.compile(r"\||:\s*[+-]?\.?\d[\w.+-]*\s*\]")
_MARKS = frozenset("()[]:|")
# Earley takes a few milliseconds a group, plus time growing faster than the square of its brackets, colons and
# bars ("marks"): 0.1 to 0.5 s at 64. A group may hold 64, and a prompt's groups share a budget of two such groups,
# each costing its marks squared plus 40 for the fixed part; a prompt past it is not parsed at all.
MAX_GROUP_MARKS = 64
_GROUP_COST = 40
_BUDGET = 2 * MAX_GROUP_MARKS**2
_OPENER = {")": "(", "]": "["}


@dataclass(frozen=True)
class ScheduledText:
    """One entry of A1111's schedule: `text` conditions every (0-based) sampler step up to `end_step`."""

    end_step: int
    text: str


@dataclass(frozen=True)
class _Group:
    """A bracket group that may edit or alternate: where it stands in the prompt, and lark's parse of it."""

    start: int
    end: int
    tree: lark.Tree


class _Unreadable(Exception):
    """A prompt A1111's grammar cannot read: a `|` outside an alternation, or a backslash escaping nothing."""


def _spans(prompt: str) -> tuple[list[tuple[int, int]], bool]:
    """Where each top-level bracket group starts and ends, and whether every bracket pairs with one of its kind;
    raises _Unreadable for a backslash at the end of a line."""
    spans: list[tuple[int, int]] = []
    open_brackets: list[str] = []
    start = i = 0
    while i < len(prompt):
        char = prompt[i]
        if char == "\\":
            # The grammar reads a backslash only as an escape, `\\.`, and `.` takes any character but a newline.
            if prompt[i + 1 : i + 2] in ("", "\n"):
                raise _Unreadable
            i += 2
            continue
        i += 1
        if char in "([":
            if not open_brackets:
                start = i - 1
            open_brackets.append(char)
        elif char in ")]":
            if not open_brackets or open_brackets[-1] != _OPENER[char]:
                return spans, False
            open_brackets.pop()
            if not open_brackets:
                spans.append((start, i))
    return spans, not open_brackets


@functools.lru_cache(maxsize=256)
def _parse(prompt: str) -> tuple[_Group, ...] | None:
    """The prompt's groups that may edit or alternate, parsed, or None where A1111 would use the prompt as written;
    raises InvalidParams past the limits on what lark is given."""
    try:
        spans, paired = _spans(prompt)
    except _Unreadable:
        return None
    if not paired:
        spans = [(0, len(prompt))]
    outside = zip([0] + [end for _, end in spans], [start for start, _ in spans] + [len(prompt)], strict=True)
    if any("|" in prompt[start:end] for start, end in outside):
        return None
    spans = [(start, end) for start, end in spans if _MAY_SCHEDULE.search(prompt, start, end)]
    marks = [sum(char in _MARKS for char in prompt[start:end]) for start, end in spans]
    if not paired and marks and marks[0] > MAX_GROUP_MARKS:
        raise InvalidParams(
            "A bracket in this prompt has no pair, so prompt editing reads the whole prompt, which holds too many"
            f" brackets, colons and bars for that (at most {MAX_GROUP_MARKS}): pair the bracket, or write it as \\["
            " or \\( to keep it as text."
        )
    if any(count > MAX_GROUP_MARKS for count in marks) or sum(count**2 + _GROUP_COST for count in marks) > _BUDGET:
        start, end = spans[marks.index(max(marks))]
        raise InvalidParams(
            f"`{quoted(prompt[start:end])}` holds too many brackets, colons and bars for prompt editing to read"
            f" (at most {MAX_GROUP_MARKS} in one bracket, fewer with several large ones): simplify it."
        )
    try:
        return tuple(_Group(start, end, _PARSER.parse(prompt[start:end])) for start, end in spans)
    except lark.exceptions.LarkError:
        return None


def _readable(prompt: str) -> tuple[_Group, ...]:
    """The parsed groups, or none where the prompt is used as written (A1111's reading, or past the limits)."""
    if "[" not in prompt:
        return ()
    try:
        return _parse(prompt) or ()
    except InvalidParams:
        return ()


def _nodes(groups: Sequence[_Group], kind: str) -> Iterator[tuple[_Group, lark.Tree]]:
    for group in groups:
        for node in group.tree.iter_subtrees():
            if node.data == kind:
                yield group, node


def _switch_step(number: str, steps: int, first_pass: int | None) -> int:
    """A1111's step for a bracket's number, clamped to 0..steps (A1111 clamps it above, but raises for a number
    past float's range; below, every number under 1 acts as 0). In a hires pass after `first_pass` steps, A1111
    counts step numbers on from the first pass's and fractions on from 1 (1.5 is half the hires pass)."""
    value = float(number)
    if first_pass is None:
        value = value * steps if "." in number else value
    else:
        value = (value - 1.0) * steps if "." in number else value - first_pass
    return int(min(max(value, 0.0), steps))


def _text(node: lark.Tree | lark.Token | None, step: int, steps: int, first_pass: int | None) -> str:
    """A1111's AtStep transformer: the text of a parse at schedule step `step`."""
    if node is None:
        return ""
    if isinstance(node, lark.Token):
        return str(node)
    if node.data == "scheduled":
        before, after, _, number, _ = node.children
        chosen = before if step <= _switch_step(number, steps, first_pass) else after
        return _text(chosen, step, steps, first_pass)
    if node.data == "alternate":
        return _text(node.children[(step - 1) % len(node.children)], step, steps, first_pass)
    return "".join(_text(child, step, steps, first_pass) for child in node.children)


def prompt_schedule(prompt: str, steps: int, first_pass: int | None = None) -> tuple[ScheduledText, ...]:
    """A1111's schedule for one prompt over `steps` steps, in order of `end_step`; for a hires pass of `steps`
    steps, `first_pass` is the steps drawn before it (A1111's `hires_steps` call)."""
    groups = _readable(prompt)
    ends = {steps}
    for _, node in _nodes(groups, "scheduled"):
        if (step := _switch_step(node.children[-2], steps, first_pass)) >= 1:
            ends.add(step)
    if any(True for _ in _nodes(groups, "alternate")):
        ends.update(range(1, steps + 1))
    schedule = []
    for end_step in sorted(ends):
        parts, written = [], 0
        for group in groups:
            parts += [prompt[written : group.start], _text(group.tree, end_step, steps, first_pass)]
            written = group.end
        schedule.append(ScheduledText(end_step, "".join(parts) + prompt[written:]))
    return tuple(schedule)


def text_at(schedule: Sequence[ScheduledText], step: int) -> str:
    """The text A1111 conditions on at 0-based sampler step `step` (its `reconstruct_cond_batch`)."""
    return next((entry.text for entry in schedule if step <= entry.end_step), schedule[-1].text)


def check_schedule(prompt: str, steps: int, hires_steps: int = 0) -> None:
    """Raise InvalidParams for a prompt-editing step past the job's end (A1111 clamps it, so the edit never
    happens), or for brackets past what this module parses. With a hires pass of `hires_steps`, A1111 lets step
    numbers run on into it, and fractions from 1 to 2 address it."""
    if "[" not in prompt:
        return
    last_step, last_fraction = steps + hires_steps, 2.0 if hires_steps else 1.0
    for group, node in _nodes(_parse(prompt) or (), "scheduled"):
        number = node.children[-2]
        value = float(number)
        written = quoted(prompt[group.start + node.meta.start_pos : group.start + node.meta.end_pos])
        if "." in number and value > last_fraction:
            raise InvalidParams(
                f"`{written}` switches at {number} of the steps, past the end: use a fraction up to"
                f" {last_fraction:.1f} such as 0.5, or a step up to {last_step}."
            )
        if "." not in number and value > last_step:
            raise InvalidParams(
                f"`{written}` switches at step {number}, but the job draws {last_step} steps: use a step up to"
                f" {last_step}, or a fraction such as 0.5."
            )
