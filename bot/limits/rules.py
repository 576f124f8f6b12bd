"""Per-member limits: what they are for a member (defaults, guild, roles, member), what a job costs,
and which limit refuses a job and until when (pure functions; `now` is always passed in)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields, replace
from enum import Enum

from core.params import GenerationParams, JobMode

# The most turns a role may have per round of the fair queue: more would let it crowd everyone else out.
MAX_TURNS = 5
HOUR = 3600.0
DAY = 86400.0
# An upscale costs its pixels in units of one 512×512 image.
UNIT_PIXELS = 512 * 512


@dataclass(frozen=True)
class Limits:
    """A full set of limits; None means unlimited (for sizes and steps: whatever /imagine allows)."""

    images_per_hour: int | None
    images_per_day: int | None
    max_queued: int | None
    cooldown_s: float
    max_size: int | None = None
    max_steps: int | None = None
    turns: int = 1  # jobs per round of the fair queue (a role's priority)


class Scope(str, Enum):
    """Who an admin's override applies to: the whole server, a role, or one member (who beats their roles)."""

    GUILD = "guild"
    ROLE = "role"
    MEMBER = "member"


@dataclass(frozen=True)
class Override:
    """Some limits set by an admin for a guild, a role or a member.

    None leaves a limit to the level above; 0 lifts it (no limit; for the cooldown, none).
    """

    images_per_hour: int | None = None
    images_per_day: int | None = None
    max_queued: int | None = None
    cooldown_s: float | None = None
    max_size: int | None = None
    max_steps: int | None = None
    turns: int | None = None


@dataclass(frozen=True)
class LimitSpec:
    """What one limit is: how admins read it, whether it counts whole things, and whether it is a wait.

    A count (images, jobs, pixels, steps) is lifted by 0 and the larger the more generous; a wait (the cooldown)
    is none at 0 and the shorter the more generous.
    """

    name: str
    label: str
    wait: bool = False
    # The values it takes (None: any count, 0 lifting it); a share of the queue is never lifted, 0 would starve.
    bounds: tuple[int, int] | None = None

    def lifts(self, value: float) -> bool:
        """Whether an override's value lifts the limit altogether (None in full limits)."""
        return value == 0 and not self.wait and self.bounds is None

    def generosity(self, value: float) -> float:
        """How generous a value is, to compare roles' overrides."""
        if self.wait:
            return -value
        return math.inf if value == 0 else value

    def stored(self, value: float) -> float | int:
        """A value as SQLite gives it back (REAL) in the limit's own kind."""
        return value if self.wait else int(value)

    def shown(self, value: float | None) -> str:
        """A value as admins read it, in full limits (None) or in an override (0)."""
        return "no limit" if value is None or self.lifts(value) else f"{value:g}"


LIMIT_SPECS: tuple[LimitSpec, ...] = (
    LimitSpec("images_per_hour", "images per hour"),
    LimitSpec("images_per_day", "images per day"),
    LimitSpec("max_queued", "jobs waiting or running at once"),
    LimitSpec("cooldown_s", "seconds between commands", wait=True),
    LimitSpec("max_size", "pixels a side at most"),
    LimitSpec("max_steps", "steps at most"),
    LimitSpec("turns", "turns per round of the queue", bounds=(1, MAX_TURNS)),
)
SPECS: dict[str, LimitSpec] = {spec.name: spec for spec in LIMIT_SPECS}
LIMIT_NAMES: tuple[str, ...] = tuple(spec.name for spec in LIMIT_SPECS)
assert LIMIT_NAMES == tuple(f.name for f in fields(Override)), "a spec for every limit an override may set"


def _apply(limits: Limits, override: Override) -> Limits:
    changes: dict[str, float | int | None] = {}
    for spec in LIMIT_SPECS:
        value = getattr(override, spec.name)
        if value is not None:
            changes[spec.name] = None if spec.lifts(value) else value
    return replace(limits, **changes)  # type: ignore[arg-type]


def _most_generous(overrides: Sequence[Override]) -> Override:
    """Per limit, the most generous value any of the member's roles sets."""
    best: dict[str, float | int] = {}
    for override in overrides:
        for spec in LIMIT_SPECS:
            value = getattr(override, spec.name)
            if value is not None and (
                spec.name not in best or spec.generosity(value) > spec.generosity(best[spec.name])
            ):
                best[spec.name] = value
    return Override(**best)  # type: ignore[arg-type]


def resolve(defaults: Limits, guild: Override | None, roles: Iterable[Override], member: Override | None) -> Limits:
    """Defaults, then the guild's override, then the most generous of the member's roles, then the member's own."""
    limits = defaults
    if guild is not None:
        limits = _apply(limits, guild)
    limits = _apply(limits, _most_generous(list(roles)))
    if member is not None:
        limits = _apply(limits, member)
    return limits


def job_cost(params: GenerationParams) -> int:
    """Images a job counts against the hourly and daily limits."""
    if params.mode is JobMode.UPSCALE:
        return max(1, math.ceil(params.width * params.height / UNIT_PIXELS))
    if params.hires:
        # Drawn again at the output size: counted by its pixels, as an upscale is.
        return max(params.count, math.ceil(params.pixels / UNIT_PIXELS))
    return params.count


@dataclass(frozen=True)
class Usage:
    """A member's recent jobs, as the limits see them."""

    recent: tuple[tuple[float, int], ...]  # (created_at, cost) of jobs in the last day that did not fail
    active: int  # jobs queued or running
    last_command_at: float | None


@dataclass(frozen=True)
class Refusal:
    """Which limit refuses a job, and from when the member can go again (None: when a job of theirs ends)."""

    reason: str
    retry_at: float | None

    def sentence(self) -> str:
        when = f" You can go again <t:{math.ceil(self.retry_at)}:R>." if self.retry_at is not None else ""
        return self.reason + when


def _window_retry(recent: Sequence[tuple[float, int]], window: float, limit: int, cost: int, now: float) -> float:
    """When enough of the window's usage has aged out for `cost` more to fit under `limit`."""
    inside = sorted((at, c) for at, c in recent if at > now - window)
    used = sum(c for _, c in inside)
    for at, c in inside:
        used -= c
        if used + cost <= limit:
            return at + window
    return now + window


def refusal(params: GenerationParams, limits: Limits, usage: Usage, now: float) -> Refusal | None:
    """The first limit the job would break, or None when it fits."""
    if limits.max_size is not None and max(params.output_size) > limits.max_size:
        smaller = "a smaller image or hires scale" if params.hires else "a smaller image"
        return Refusal(f"Your limit is {limits.max_size} pixels a side: ask for {smaller}.", None)
    if limits.max_steps is not None and max(params.steps, params.second_pass_steps) > limits.max_steps:
        return Refusal(f"Your limit is {limits.max_steps} steps: ask for fewer.", None)
    if usage.last_command_at is not None and now - usage.last_command_at < limits.cooldown_s:
        return Refusal(
            f"Slow down: one command every {limits.cooldown_s:g} seconds.", usage.last_command_at + limits.cooldown_s
        )
    if limits.max_queued is not None and usage.active >= limits.max_queued:
        return Refusal(
            f"You already have {usage.active} jobs waiting or running (the limit is {limits.max_queued}):"
            " try again when one has finished.",
            None,
        )
    cost = job_cost(params)
    for limit, window, name in (
        (limits.images_per_hour, HOUR, "hour"),
        (limits.images_per_day, DAY, "day"),
    ):
        if limit is None:
            continue
        used = sum(c for at, c in usage.recent if at > now - window)
        if used + cost > limit:
            if cost > limit:
                return Refusal(f"That job counts {cost} images, more than your {limit} per {name}.", None)
            return Refusal(
                f"You have used {used} of your {limit} images this {name}; this job needs {cost}.",
                _window_retry(usage.recent, window, limit, cost, now),
            )
    return None
