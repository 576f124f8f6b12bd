"""The buttons on every result: their actions and custom_ids, their layout, and the DynamicItems that answer them.

A custom_id is `sdbot:<action>:<job id>[:<image number>]`; everything else is read from the job in SQLite,
so a button on a month-old message works after any number of restarts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Any

import discord

from bot.interactions.adapter import caller_and_responder
from core.jobs import Job
from core.params import MAX_DERIVED_SIZE, UPSCALE_FACTOR, half_side

PREFIX = "sdbot"
MAX_CUSTOM_ID = 100
_JOB_ID = r"[0-9a-f]{4,32}"


class ImageAction(str, Enum):
    """What a button does with one image of a result; its custom_id carries the image's number."""

    VARY_SUBTLE = "vary-subtle"
    VARY_STRONG = "vary-strong"
    UPSCALE = "upscale"
    ZOOM_1_5 = "zoom-1.5"
    ZOOM_2 = "zoom-2"
    PAN_LEFT = "pan-left"
    PAN_RIGHT = "pan-right"
    PAN_UP = "pan-up"
    PAN_DOWN = "pan-down"
    SHARE = "share"
    FACES = "faces"
    # Not an image of a result: prompt number N of a /describe answer, whose id stands in the job's place.
    DESCRIBE = "describe"

    @property
    def family(self) -> str:
        """The kind of action: vary, upscale, zoom, pan, share, faces or describe."""
        return self.value.partition("-")[0]

    @property
    def argument(self) -> str:
        """What follows the family: a variation's strength, a zoom's factor, a pan's direction ("" for none)."""
        return self.value.partition("-")[2]


class JobAction(str, Enum):
    """What a button does with a whole job: reroll, delete or cancel it, open 🎛 Remix over it, run a draft read
    from an image, or page through /history from it."""

    REROLL = "reroll"
    DELETE = "delete"
    CANCEL = "cancel"
    REMIX = "remix"
    RUN = "run"
    HISTORY_NEXT = "history-next"
    HISTORY_PREV = "history-prev"


Action = ImageAction | JobAction


def _template(actions: type[Enum], *, numbered: bool, named: bool = True) -> str:
    """The custom_ids of one family of actions; `numbered` adds the image's number, `named` names the groups."""

    def group(name: str, pattern: str) -> str:
        return f"(?P<{name}>{pattern})" if named else f"(?:{pattern})"

    actions_pattern = "|".join(re.escape(action.value) for action in actions)
    template = f"{PREFIX}:{group('action', actions_pattern)}:{group('job', _JOB_ID)}"
    return template + (f":{group('index', '[1-9]')}" if numbered else "")


# Each family's custom_ids, as discord.py's DynamicItem templates (which it fullmatches) and for Press.parse.
IMAGE_TEMPLATE = _template(ImageAction, numbered=True)
JOB_TEMPLATE = _template(JobAction, numbered=False)
# Every custom_id neither family claims, newlines included: discord.py runs every item whose template matches,
# so this one must never match theirs, or a press would be answered twice.
_CLAIMED = f"{_template(ImageAction, numbered=True, named=False)}|{_template(JobAction, numbered=False, named=False)}"
UNKNOWN_TEMPLATE = rf"(?!(?:{_CLAIMED})\Z)(?P<custom_id>[\s\S]+)"
_IMAGE = re.compile(IMAGE_TEMPLATE)
_JOB = re.compile(JOB_TEMPLATE)


class BadButton(ValueError):
    """A custom_id this bot did not make (or no longer understands)."""


@dataclass(frozen=True)
class Press:
    """What a button asks for: an image action with the image's number, or a job action without one."""

    action: Action
    job_id: str
    index: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.action, ImageAction) != (self.index is not None):
            raise BadButton(f"{self.action} with image number {self.index}")

    @property
    def custom_id(self) -> str:
        suffix = f":{self.index}" if self.index is not None else ""
        custom_id = f"{PREFIX}:{self.action.value}:{self.job_id}{suffix}"
        assert len(custom_id) <= MAX_CUSTOM_ID
        return custom_id

    @classmethod
    def of(cls, match: re.Match[str]) -> Press:
        """The press a match of IMAGE_TEMPLATE or JOB_TEMPLATE stands for."""
        index = match.groupdict().get("index")
        if index is None:
            return cls(JobAction(match["action"]), match["job"])
        return cls(ImageAction(match["action"]), match["job"], int(index))

    @classmethod
    def parse(cls, custom_id: str) -> Press:
        """The press a custom_id stands for, or BadButton."""
        match = _IMAGE.fullmatch(custom_id) or _JOB.fullmatch(custom_id)
        if match is None:
            raise BadButton(custom_id)
        return cls.of(match)


@dataclass(frozen=True)
class ButtonSpec:
    """One button as laid out on a result."""

    press: Press
    label: str
    row: int
    emoji: str | None = None
    style: discord.ButtonStyle = discord.ButtonStyle.secondary


def result_buttons(job: Job, count: int, hidden: frozenset[int] = frozenset()) -> list[ButtonSpec]:
    """Buttons for a result of `count` images, at most 5 rows of 5; none for the `hidden` (withheld) images.

    Several images: upscale or vary each. One image (also every upscale and outpaint): upscale again,
    vary, zoom out and pan, where the result would still fit the size cap.
    """
    width, height = job.params.output_size
    buttons: list[ButtonSpec] = []
    if count > 1:
        for i in (i for i in range(1, count + 1) if i not in hidden):
            buttons.append(
                ButtonSpec(Press(ImageAction.UPSCALE, job.id, i), f"U{i}", row=0, style=discord.ButtonStyle.primary)
            )
            buttons.append(ButtonSpec(Press(ImageAction.VARY_SUBTLE, job.id, i), f"V{i} subtle", row=1))
            buttons.append(ButtonSpec(Press(ImageAction.VARY_STRONG, job.id, i), f"V{i} strong", row=2))
    elif 1 not in hidden:
        if max(width, height) * UPSCALE_FACTOR <= MAX_DERIVED_SIZE:
            upscale = ButtonSpec(
                Press(ImageAction.UPSCALE, job.id, 1), "Upscale ×2", 0, "⬆️", discord.ButtonStyle.primary
            )
            buttons.append(upscale)
        buttons.append(ButtonSpec(Press(ImageAction.VARY_SUBTLE, job.id, 1), "Vary (subtle)", row=0, emoji="🪄"))
        buttons.append(ButtonSpec(Press(ImageAction.VARY_STRONG, job.id, 1), "Vary (strong)", row=0, emoji="🪄"))
        buttons.append(ButtonSpec(Press(ImageAction.ZOOM_1_5, job.id, 1), "Zoom out 1.5×", row=1, emoji="🔍"))
        buttons.append(ButtonSpec(Press(ImageAction.ZOOM_2, job.id, 1), "Zoom out 2×", row=1, emoji="🔍"))
        buttons.append(ButtonSpec(Press(ImageAction.FACES, job.id, 1), "Fix faces", row=1, emoji="🙂"))
        wide_ok = width + half_side(width) <= MAX_DERIVED_SIZE
        tall_ok = height + half_side(height) <= MAX_DERIVED_SIZE
        for pan, emoji, fits in (
            (ImageAction.PAN_LEFT, "⬅️", wide_ok),
            (ImageAction.PAN_RIGHT, "➡️", wide_ok),
            (ImageAction.PAN_UP, "⬆️", tall_ok),
            (ImageAction.PAN_DOWN, "⬇️", tall_ok),
        ):
            if fits:
                buttons.append(ButtonSpec(Press(pan, job.id, 1), "", row=2, emoji=emoji))
    buttons.append(ButtonSpec(Press(JobAction.REROLL, job.id), "Reroll", row=3, emoji="🔄"))
    buttons.append(ButtonSpec(Press(JobAction.REMIX, job.id), "Remix", row=3, emoji="🎛️"))
    if count == 1 and 1 not in hidden:
        buttons.append(ButtonSpec(Press(ImageAction.SHARE, job.id, 1), "Share", row=3, emoji="⭐"))
    buttons.append(
        ButtonSpec(Press(JobAction.DELETE, job.id), "Delete", row=3, emoji="🗑️", style=discord.ButtonStyle.danger)
    )
    if count > 1:
        shown = [i for i in range(1, count + 1) if i not in hidden]
        buttons += [ButtonSpec(Press(ImageAction.SHARE, job.id, i), f"Share {i}", row=4, emoji="⭐") for i in shown]
    return buttons


def shared_buttons(job: Job, index: int, size: tuple[int, int]) -> list[ButtonSpec]:
    """What others can do with an image in the art channel: remix its settings, upscale it (if it fits)."""
    buttons = [ButtonSpec(Press(JobAction.REMIX, job.id), "Remix", row=0, emoji="🎛️")]
    if max(size) * UPSCALE_FACTOR <= MAX_DERIVED_SIZE:
        buttons.append(
            ButtonSpec(Press(ImageAction.UPSCALE, job.id, index), "Upscale ×2", 0, "⬆️", discord.ButtonStyle.primary)
        )
    return buttons


class _Pressed:
    """What both families of button share: made for one press, read back from the custom_id's match, and handed
    to the press service when pressed."""

    item: discord.ui.Button[Any]

    def __init__(self, press: Press, **button: Any) -> None:
        super().__init__(discord.ui.Button(custom_id=press.custom_id, **button))  # type: ignore[call-arg]
        self.press = press

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> Any:
        return cls(Press.of(match))

    async def callback(self, interaction: discord.Interaction) -> None:
        caller, responder = caller_and_responder(interaction)
        await interaction.client.presses.press(caller, responder, self.press)  # type: ignore[attr-defined]


class ImageButton(_Pressed, discord.ui.DynamicItem[discord.ui.Button[Any]], template=IMAGE_TEMPLATE):
    """A button acting on one image of a result."""


class JobButton(_Pressed, discord.ui.DynamicItem[discord.ui.Button[Any]], template=JOB_TEMPLATE):
    """A button acting on a whole job."""


class UnknownButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=UNKNOWN_TEMPLATE):
    """Any other custom_id (an older version's, or forged): answered with a sentence, never "This interaction
    failed"."""

    def __init__(self, custom_id: str) -> None:
        super().__init__(discord.ui.Button(custom_id=custom_id))

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> UnknownButton:
        return cls(match["custom_id"])

    async def callback(self, interaction: discord.Interaction) -> None:
        caller, responder = caller_and_responder(interaction)
        await interaction.client.presses.unknown(caller, responder, self.item.custom_id)  # type: ignore[attr-defined]


# What the client registers: every custom_id matches exactly one of them.
BUTTON_ITEMS = (ImageButton, JobButton, UnknownButton)


def button_item(press: Press, **button: Any) -> ImageButton | JobButton:
    """The item for a press, of its family."""
    family = ImageButton if isinstance(press.action, ImageAction) else JobButton
    return family(press, **button)


def cancel_view(job: Job) -> discord.ui.View:
    """The ❌ Cancel button on a job's status message while it waits or runs."""
    view = discord.ui.View(timeout=None)
    view.add_item(button_item(Press(JobAction.CANCEL, job.id), label="Cancel", emoji="❌"))
    return view


def result_view(job: Job, count: int, hidden: frozenset[int] = frozenset()) -> discord.ui.View:
    """A view holding the result's buttons; it needs no timeout, the DynamicItems answer for ever."""
    return buttons_view(result_buttons(job, count, hidden))


def buttons_view(specs: list[ButtonSpec]) -> discord.ui.View:
    """A view of laid-out buttons, each answered by its family's DynamicItem."""
    view = discord.ui.View(timeout=None)
    for spec in specs:
        view.add_item(
            button_item(spec.press, label=spec.label or None, emoji=spec.emoji, style=spec.style, row=spec.row)
        )
    return view
