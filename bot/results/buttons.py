"""The buttons on every result: their custom_ids, their layout, and the one DynamicItem that answers them all.

A custom_id is `sdbot:<action>:<job id>[:<image number>]`; everything else is read from the job in SQLite,
so a button on a month-old message works after any number of restarts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import discord

from bot.interactions.adapter import caller_and_responder
from core.jobs import Job
from core.params import MAX_DERIVED_SIZE, UPSCALE_FACTOR, half_side

PREFIX = "sdbot"
# Actions on one image carry its number; reroll and delete act on the whole result.
IMAGE_ACTIONS = (
    "vary-subtle",
    "vary-strong",
    "upscale",
    "zoom-1.5",
    "zoom-2",
    "pan-left",
    "pan-right",
    "pan-up",
    "pan-down",
    "share",
)
# remix opens a modal over a job; run starts a draft read from an image; history-* page through /history
# from a cursor job.
JOB_ACTIONS = ("reroll", "delete", "cancel", "remix", "run", "history-next", "history-prev")
_CUSTOM_ID = re.compile(r"^sdbot:(?P<action>[a-z0-9.-]+):(?P<job>[0-9a-f]{4,32})(?::(?P<index>[1-9]))?$")
MAX_CUSTOM_ID = 100


class BadButton(ValueError):
    """A custom_id this bot did not make (or no longer understands)."""


@dataclass(frozen=True)
class Press:
    """What a button asks for."""

    action: str
    job_id: str
    index: int | None = None

    @property
    def custom_id(self) -> str:
        suffix = f":{self.index}" if self.index is not None else ""
        custom_id = f"{PREFIX}:{self.action}:{self.job_id}{suffix}"
        assert len(custom_id) <= MAX_CUSTOM_ID
        return custom_id

    @classmethod
    def parse(cls, custom_id: str) -> Press:
        """The press a custom_id stands for, or BadButton."""
        match = _CUSTOM_ID.match(custom_id)
        if match is None:
            raise BadButton(custom_id)
        action, index = match["action"], match["index"]
        if action in JOB_ACTIONS and index is None:
            return cls(action, match["job"])
        if action in IMAGE_ACTIONS and index is not None:
            return cls(action, match["job"], int(index))
        raise BadButton(custom_id)


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
    params = job.params
    buttons: list[ButtonSpec] = []
    if count > 1:
        for i in (i for i in range(1, count + 1) if i not in hidden):
            buttons.append(ButtonSpec(Press("upscale", job.id, i), f"U{i}", row=0, style=discord.ButtonStyle.primary))
            buttons.append(ButtonSpec(Press("vary-subtle", job.id, i), f"V{i} subtle", row=1))
            buttons.append(ButtonSpec(Press("vary-strong", job.id, i), f"V{i} strong", row=2))
    elif 1 not in hidden:
        if max(params.width, params.height) * UPSCALE_FACTOR <= MAX_DERIVED_SIZE:
            upscale = ButtonSpec(Press("upscale", job.id, 1), "Upscale ×2", 0, "⬆️", discord.ButtonStyle.primary)
            buttons.append(upscale)
        buttons.append(ButtonSpec(Press("vary-subtle", job.id, 1), "Vary (subtle)", row=0, emoji="🪄"))
        buttons.append(ButtonSpec(Press("vary-strong", job.id, 1), "Vary (strong)", row=0, emoji="🪄"))
        buttons.append(ButtonSpec(Press("zoom-1.5", job.id, 1), "Zoom out 1.5×", row=1, emoji="🔍"))
        buttons.append(ButtonSpec(Press("zoom-2", job.id, 1), "Zoom out 2×", row=1, emoji="🔍"))
        wide_ok = params.width + half_side(params.width) <= MAX_DERIVED_SIZE
        tall_ok = params.height + half_side(params.height) <= MAX_DERIVED_SIZE
        for direction, emoji, fits in (
            ("left", "⬅️", wide_ok),
            ("right", "➡️", wide_ok),
            ("up", "⬆️", tall_ok),
            ("down", "⬇️", tall_ok),
        ):
            if fits:
                buttons.append(ButtonSpec(Press(f"pan-{direction}", job.id, 1), "", row=2, emoji=emoji))
    buttons.append(ButtonSpec(Press("reroll", job.id), "Reroll", row=3, emoji="🔄"))
    buttons.append(ButtonSpec(Press("remix", job.id), "Remix", row=3, emoji="🎛️"))
    if count == 1 and 1 not in hidden:
        buttons.append(ButtonSpec(Press("share", job.id, 1), "Share", row=3, emoji="⭐"))
    buttons.append(ButtonSpec(Press("delete", job.id), "Delete", row=3, emoji="🗑️", style=discord.ButtonStyle.danger))
    if count > 1:
        shown = [i for i in range(1, count + 1) if i not in hidden]
        buttons += [ButtonSpec(Press("share", job.id, i), f"Share {i}", row=4, emoji="⭐") for i in shown]
    return buttons


def shared_buttons(job: Job, index: int, size: tuple[int, int]) -> list[ButtonSpec]:
    """What others can do with an image in the art channel: remix its settings, upscale it (if it fits)."""
    buttons = [ButtonSpec(Press("remix", job.id), "Remix", row=0, emoji="🎛️")]
    if max(size) * UPSCALE_FACTOR <= MAX_DERIVED_SIZE:
        buttons.append(ButtonSpec(Press("upscale", job.id, index), "Upscale ×2", 0, "⬆️", discord.ButtonStyle.primary))
    return buttons


# Any custom_id at all, newlines included, so that none ends without an answer.
class ResultButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"(?P<custom_id>[\s\S]+)"):
    """Answers every button press, whatever its custom_id, so none ends in "This interaction failed"."""

    def __init__(self, custom_id: str, **button: Any) -> None:
        super().__init__(discord.ui.Button(custom_id=custom_id, **button))

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> ResultButton:
        return cls(match["custom_id"])

    async def callback(self, interaction: discord.Interaction) -> None:
        caller, responder = caller_and_responder(interaction)
        await interaction.client.presses.press(caller, responder, self.item.custom_id)  # type: ignore[attr-defined]


def cancel_view(job: Job) -> discord.ui.View:
    """The ❌ Cancel button on a job's status message while it waits or runs."""
    view = discord.ui.View(timeout=None)
    view.add_item(ResultButton(Press("cancel", job.id).custom_id, label="Cancel", emoji="❌"))
    return view


def result_view(job: Job, count: int, hidden: frozenset[int] = frozenset()) -> discord.ui.View:
    """A view holding the result's buttons; it needs no timeout, the DynamicItem answers for ever."""
    return buttons_view(result_buttons(job, count, hidden))


def buttons_view(specs: list[ButtonSpec]) -> discord.ui.View:
    """A view of laid-out buttons, all answered by the DynamicItem."""
    view = discord.ui.View(timeout=None)
    for spec in specs:
        view.add_item(
            ResultButton(
                spec.press.custom_id, label=spec.label or None, emoji=spec.emoji, style=spec.style, row=spec.row
            )
        )
    return view
