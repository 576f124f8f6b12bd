"""Limits as pure functions of usage and an injected clock: no sleeping."""

from __future__ import annotations

import pytest

from bot.limits.rules import DAY, HOUR, Limits, Override, Usage, job_cost, refusal, resolve
from core.params import GenerationParams

NOW = 1_800_000_000.0
FOUR = GenerationParams(prompt="fox", count=4)
ONE = GenerationParams(prompt="fox")
LIMITS = Limits(images_per_hour=10, images_per_day=30, max_queued=3, cooldown_s=5.0)


def usage(*recent: tuple[float, int], active: int = 0, last: float | None = None) -> Usage:
    return Usage(recent=tuple(recent), active=active, last_command_at=last)


def test_a_job_costs_its_images_and_an_upscale_its_pixels() -> None:
    assert job_cost(FOUR) == 4
    assert job_cost(ONE.upscaled((512, 512), seed=1)) == 4  # 1024² is four 512² images
    assert job_cost(ONE.upscaled((512, 768), seed=1)) == 6
    assert job_cost(ONE.variation((512, 512), "subtle", seed=1)) == 1
    # A hires fix is drawn again at its output size: counted by those pixels, as an upscale is.
    assert job_cost(GenerationParams(prompt="fox", hires=2.0)) == 4
    assert job_cost(GenerationParams(prompt="fox", hires=2.0, width=256, height=256, count=3)) == 3


def test_hires_steps_count_against_the_step_limit() -> None:
    capped = Limits(None, None, None, 0.0, max_steps=40)
    long_pass = GenerationParams(prompt="x", steps=20, hires=1.5, hires_steps=60)
    assert "40 steps" in refusal(long_pass, capped, usage(), NOW).reason  # type: ignore[union-attr]
    assert refusal(GenerationParams(prompt="x", steps=40, hires=1.5), capped, usage(), NOW) is None


def test_the_hourly_window_rolls_and_says_when_the_member_can_go_again() -> None:
    used = usage((NOW - 3000, 4), (NOW - 1000, 4))
    verdict = refusal(FOUR, LIMITS, used, NOW)
    assert verdict is not None
    assert verdict.reason == "You have used 8 of your 10 images this hour; this job needs 4."
    # Freeing the job from 3000 s ago is enough: it leaves the window 600 s from now.
    assert verdict.retry_at == NOW - 3000 + HOUR
    assert verdict.sentence().endswith(f"You can go again <t:{int(NOW - 3000 + HOUR)}:R>.")
    assert refusal(FOUR, LIMITS, used, NOW + 601) is None
    assert refusal(ONE, LIMITS, used, NOW) is None


def test_the_daily_window_counts_older_jobs_too() -> None:
    used = usage(*[(NOW - DAY + 600 + i, 4) for i in range(7)])  # 28 images, all older than an hour
    verdict = refusal(FOUR, LIMITS, used, NOW)
    assert verdict is not None and "this day" in verdict.reason
    assert verdict.retry_at == NOW - DAY + 600 + DAY
    assert refusal(FOUR, LIMITS, used, NOW + 601) is None


def test_cooldown_queue_size_and_the_per_role_caps() -> None:
    assert refusal(ONE, LIMITS, usage(last=NOW - 2), NOW).retry_at == NOW + 3  # type: ignore[union-attr]
    assert refusal(ONE, LIMITS, usage(last=NOW - 5), NOW) is None
    full = refusal(ONE, LIMITS, usage(active=3), NOW)
    assert full is not None and full.retry_at is None and "3 jobs waiting or running" in full.reason
    capped = Limits(None, None, None, 0.0, max_size=768, max_steps=40)
    assert "768 pixels a side" in refusal(GenerationParams(prompt="x", width=1024), capped, usage(), NOW).reason  # type: ignore[union-attr]
    assert "40 steps" in refusal(GenerationParams(prompt="x", steps=50), capped, usage(), NOW).reason  # type: ignore[union-attr]
    assert refusal(GenerationParams(prompt="x", width=768, steps=40), capped, usage(), NOW) is None


def test_a_job_larger_than_the_whole_limit_says_so_without_a_time() -> None:
    verdict = refusal(FOUR, Limits(3, None, None, 0.0), usage(), NOW)
    assert verdict is not None and verdict.retry_at is None
    assert verdict.reason == "That job counts 4 images, more than your 3 per hour."


def test_unlimited_limits_never_refuse() -> None:
    unlimited = Limits(None, None, None, 0.0)
    assert refusal(FOUR, unlimited, usage(*[(NOW - 1, 4)] * 100, active=50, last=NOW), NOW) is None


@pytest.mark.parametrize(
    ("guild", "roles", "member", "expected"),
    [
        (None, [], None, LIMITS),
        (Override(images_per_hour=5), [], None, Limits(5, 30, 3, 5.0)),
        # The most generous role wins, limit by limit; 0 lifts a limit and is the most generous.
        (
            Override(images_per_hour=5),
            [Override(images_per_hour=20, cooldown_s=10), Override(images_per_hour=15, cooldown_s=1, max_queued=0)],
            None,
            Limits(20, 30, None, 1.0),
        ),
        # A member's own override beats every role, also when it is stricter.
        (None, [Override(images_per_hour=50)], Override(images_per_hour=2, max_size=512), Limits(2, 30, 3, 5.0, 512)),
        (None, [Override(max_steps=20), Override(max_steps=0)], None, Limits(10, 30, 3, 5.0, None, None)),
    ],
)
def test_overrides_resolve_guild_then_best_role_then_member(
    guild: Override | None, roles: list[Override], member: Override | None, expected: Limits
) -> None:
    assert resolve(LIMITS, guild, roles, member) == expected
