"""A member's own defaults for /imagine (`/settings`), and where each value a job uses comes from (no torch)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from core.aspect import AspectRatio
from core.params import (
    HIRES_SCALES,
    HIRES_UPSCALERS,
    MAX_CFG,
    MAX_HIRES_STRENGTH,
    MAX_PROMPT_CHARS,
    MAX_SIZE,
    MAX_STEPS,
    MAX_UPSCALER_NAME,
    MIN_CFG,
    MIN_HIRES_STRENGTH,
    MIN_SIZE,
    MIN_STEPS,
    SAMPLERS,
    SIZE_MULTIPLE,
    InvalidParams,
)


class Setting(str, Enum):
    """What a member may keep as a default; the value is the name stored in SQLite and shown by /settings."""

    MODEL = "model"
    AR = "ar"
    WIDTH = "width"
    HEIGHT = "height"
    STEPS = "steps"
    CFG = "cfg"
    SAMPLER = "sampler"
    NEGATIVE_PROMPT = "negative_prompt"
    STYLE = "style"
    HIRES = "hires"
    HIRES_STRENGTH = "hires_strength"
    HIRES_STEPS = "hires_steps"
    HIRES_UPSCALER = "hires_upscaler"
    FACE_FIX = "face_fix"
    QUIET = "quiet"

    @property
    def per_server(self) -> bool:
        """Models and styles are chosen per server (its channels' models, its own styles); the rest follow the
        member everywhere."""
        return self in (Setting.MODEL, Setting.STYLE)


class Source(str, Enum):
    """Where a value a job uses comes from, in the order one beats the next; the value is how /settings says it."""

    OPTION = "this command"
    MEMBER = "your setting"
    CHANNEL = "this channel's default"
    MODEL = "the model's defaults"
    BOT = "the bot's default"


@dataclass(frozen=True)
class MemberSettings:
    """A member's defaults; None where they keep none. A size is either an aspect ratio or a width and height."""

    model: str | None = None
    ar: str | None = None
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    cfg: float | None = None
    sampler: str | None = None
    negative_prompt: str | None = None
    style: str | None = None
    hires: float | None = None  # a hires fix on every /imagine, at this scale
    hires_strength: float | None = None
    hires_steps: int | None = None
    hires_upscaler: str | None = None
    face_fix: bool | None = None  # redraw the faces of every image drawn
    quiet: bool | None = None

    def __post_init__(self) -> None:
        # Every value is checked where it enters (the command, and the rows read back), so a stored setting is one
        # /imagine would take.
        if self.ar is not None:
            AspectRatio.parse(self.ar)
        if (self.width is None) != (self.height is None):
            raise InvalidParams("Set the width and the height together.")
        if self.ar is not None and self.width is not None:
            raise InvalidParams("Keep an aspect ratio or a width and height, not both: set one of them.")
        for side in (self.width, self.height):
            if side is not None and not (MIN_SIZE <= side <= MAX_SIZE and side % SIZE_MULTIPLE == 0):
                raise InvalidParams(
                    f"Width and height must be multiples of {SIZE_MULTIPLE} from {MIN_SIZE} to {MAX_SIZE}."
                )
        if self.steps is not None and not MIN_STEPS <= self.steps <= MAX_STEPS:
            raise InvalidParams(f"Steps must be from {MIN_STEPS} to {MAX_STEPS}.")
        if self.cfg is not None and not MIN_CFG <= self.cfg <= MAX_CFG:
            raise InvalidParams(f"CFG must be from {MIN_CFG:g} to {MAX_CFG:g}.")
        if self.sampler is not None and self.sampler not in SAMPLERS:
            raise InvalidParams(f"Choose a sampler from: {', '.join(SAMPLERS)}.")
        if self.negative_prompt is not None and len(self.negative_prompt) > MAX_PROMPT_CHARS:
            raise InvalidParams(f"A negative prompt is at most {MAX_PROMPT_CHARS} characters.")
        if self.hires is not None and self.hires not in HIRES_SCALES:
            raise InvalidParams(f"Hires fix scales by {' or '.join(f'{h:g}' for h in HIRES_SCALES)}.")
        if self.hires_strength is not None and not MIN_HIRES_STRENGTH <= self.hires_strength <= MAX_HIRES_STRENGTH:
            raise InvalidParams(f"Hires denoising must be from {MIN_HIRES_STRENGTH:g} to {MAX_HIRES_STRENGTH:g}.")
        if self.hires_steps is not None and not MIN_STEPS <= self.hires_steps <= MAX_STEPS:
            raise InvalidParams(f"Hires steps must be from {MIN_STEPS} to {MAX_STEPS}.")
        if self.hires_upscaler is not None and not 0 < len(self.hires_upscaler) <= MAX_UPSCALER_NAME:
            raise InvalidParams(f"Name a hires upscaler: {', '.join(HIRES_UPSCALERS)} or an installed model.")

    def value(self, setting: Setting) -> str | int | float | bool | None:
        return getattr(self, setting.value)  # type: ignore[no-any-return]

    def without(self, *settings: Setting) -> MemberSettings:
        """These settings cleared (a size is cleared as a whole: its ratio, or its width and height)."""
        names = {s.value for s in settings}
        if names & {"ar", "width", "height"}:
            names |= {"ar", "width", "height"}
        return dataclasses.replace(self, **{name: None for name in names})

    def rows(self) -> dict[Setting, str]:
        """The settings kept, as SQLite stores them."""
        stored: dict[Setting, str] = {}
        for setting in Setting:
            value = self.value(setting)
            if value is not None:
                stored[setting] = str(int(value)) if isinstance(value, bool) else str(value)
        return stored

    @classmethod
    def from_rows(cls, rows: Mapping[str, str]) -> MemberSettings:
        """Settings as stored; one that no longer reads (a sampler since dropped) is left out, not fatal."""
        values: dict[str, str | int | float | bool] = {}
        for name, text in rows.items():
            try:
                values[name] = _parse(Setting(name), text)
            except ValueError:
                continue
        kept: dict[str, str | int | float | bool] = {}
        for group in _GROUPS:
            part = {name: values[name] for name in group if name in values}
            try:
                cls(**part)  # type: ignore[arg-type]
            except InvalidParams:
                continue
            kept.update(part)
        try:
            return cls(**kept)  # type: ignore[arg-type]
        except InvalidParams:
            # Both a ratio and a width and height: neither wins.
            return cls(**{name: v for name, v in kept.items() if name not in _SIZE})  # type: ignore[arg-type]


# Settings that are only valid together; each other setting stands alone.
_SIZE = ("ar", "width", "height")
_GROUPS: tuple[tuple[str, ...], ...] = (("width", "height"),) + tuple(
    (s.value,) for s in Setting if s not in (Setting.WIDTH, Setting.HEIGHT)
)


def _parse(setting: Setting, text: str) -> str | int | float | bool:
    if setting in (Setting.WIDTH, Setting.HEIGHT, Setting.STEPS, Setting.HIRES_STEPS):
        return int(text)
    if setting in (Setting.CFG, Setting.HIRES, Setting.HIRES_STRENGTH):
        return float(text)
    if setting in (Setting.QUIET, Setting.FACE_FIX):
        return text == "1"
    return text
