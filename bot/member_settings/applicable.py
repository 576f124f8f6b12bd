"""Which of a member's settings still apply where they ask: what the server allowed when they were set may have
changed since, and a setting that no longer fits falls back with a note instead of failing the job."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from bot.limits.rules import Limits
from bot.models.picker import Models
from bot.styles.store import Styles
from core.member_settings import MemberSettings, Setting
from core.params import HIRES_UPSCALERS, MAX_SIZE, InvalidParams


def still_applicable(
    member: MemberSettings,
    *,
    models: Models,
    styles: Styles | None,
    guild_id: int | None,
    limits: Limits,
    upscalers: Sequence[str] = (),
) -> tuple[MemberSettings, list[str]]:
    """The member's settings that apply here, and a sentence for each left out: a model since removed, a style
    since deleted, a size or steps over the member's limits here."""
    notes: list[str] = []
    if member.model is not None:
        try:
            models.entry(member.model)
        except InvalidParams:
            notes.append(f"Your default model `{member.model}` is not available here now: the default applies.")
            member = member.without(Setting.MODEL)
    if member.style is not None:
        names = [name.strip() for name in member.style.split(",") if name.strip()]
        known = {style.name.lower() for style in styles.in_guild(guild_id)} if styles is not None else set()
        gone = [name for name in names if name.lower() not in known]
        if gone:
            notes.append(f"This server no longer has your style `{', '.join(gone)[:100]}`: it is left out.")
            member = replace(member, style=", ".join(name for name in names if name.lower() in known) or None)
    if member.hires_upscaler is not None and member.hires_upscaler not in (*HIRES_UPSCALERS, *upscalers):
        notes.append(f"The upscaler `{member.hires_upscaler[:60]}` is not installed now: the default applies.")
        member = member.without(Setting.HIRES_UPSCALER)
    max_side = min(MAX_SIZE, limits.max_size or MAX_SIZE)
    if member.width is not None and member.height is not None and max(member.width, member.height) > max_side:
        notes.append(
            f"Your size {member.width}×{member.height} is over your largest side here ({max_side}):"
            " the default size applies."
        )
        member = member.without(Setting.WIDTH)
    for setting in (Setting.STEPS, Setting.HIRES_STEPS):
        steps = member.value(setting)
        if isinstance(steps, int) and limits.max_steps is not None and steps > limits.max_steps:
            what = "steps" if setting is Setting.STEPS else "hires steps"
            notes.append(f"Your {steps} {what} are over your limit here ({limits.max_steps}): the default applies.")
            member = member.without(setting)
    return member, notes
