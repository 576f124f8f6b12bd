"""/history: a member's recent results, four to a page, each with a link and buttons to redo or upscale."""

from __future__ import annotations

import math

import discord
from discord import app_commands

from bot.community.sharing import message_link
from bot.interactions.adapter import caller_and_responder
from bot.interactions.port import Caller, Responder
from bot.pipeline.store import JobStore
from bot.results.buttons import ButtonSpec, ImageAction, JobAction, Press, buttons_view
from core.jobs import Job
from core.params import MAX_DERIVED_SIZE, UPSCALE_FACTOR

# One row of buttons per job, and a row for paging: Discord allows five rows.
PAGE_SIZE = 4
NO_HISTORY = "You have no results yet: try `/imagine`."


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def history_page(jobs: list[Job], has_older: bool, has_newer: bool) -> tuple[discord.Embed, list[ButtonSpec]]:
    """The page's embed (one line per job, newest first) and its buttons."""
    lines = []
    buttons: list[ButtonSpec] = []
    for row, job in enumerate(jobs):
        assert job.result_message_id is not None
        link = message_link(job.guild_id, job.channel_id, job.result_message_id)
        params = job.params
        width, height = params.output_size
        lines.append(
            f"**{row + 1}.** <t:{math.floor(job.created_at)}:R> · {params.mode.value} · {width}×{height}"
            f" · [result]({link})\n“{_short(params.prompt)}”"
        )
        buttons.append(ButtonSpec(Press(JobAction.REROLL, job.id), f"Redo {row + 1}", row=row, emoji="🔄"))
        if max(width, height) * UPSCALE_FACTOR <= MAX_DERIVED_SIZE:
            for i in range(1, params.count + 1):
                if i in job.withheld:
                    continue
                buttons.append(ButtonSpec(Press(ImageAction.UPSCALE, job.id, i), f"U{i}", row=row))
    paging = len(jobs)
    if has_newer:
        buttons.append(ButtonSpec(Press(JobAction.HISTORY_PREV, jobs[0].id), "Newer", row=paging, emoji="◀️"))
    if has_older:
        buttons.append(ButtonSpec(Press(JobAction.HISTORY_NEXT, jobs[-1].id), "Older", row=paging, emoji="▶️"))
    embed = discord.Embed(title="Your recent results", description="\n".join(lines), colour=discord.Colour.blurple())
    return embed, buttons


class HistoryService:
    """Pages through a member's delivered jobs with a cursor (a job id), so pages need no state."""

    def __init__(self, store: JobStore) -> None:
        self.store = store

    async def page(
        self, user_id: int, *, older_than: str | None = None, newer_than: str | None = None
    ) -> tuple[discord.Embed, list[ButtonSpec]] | None:
        """The page just older (or newer) than a cursor job, the newest without one; None when empty."""
        jobs = await self.store.history(user_id, older_than=older_than, newer_than=newer_than, limit=PAGE_SIZE)
        if not jobs:
            return None
        has_older = bool(await self.store.history(user_id, older_than=jobs[-1].id, limit=1))
        has_newer = bool(await self.store.history(user_id, newer_than=jobs[0].id, limit=1))
        return history_page(jobs, has_older, has_newer)

    async def show(self, caller: Caller, responder: Responder) -> None:
        """/history: the newest page, privately."""
        page = await self.page(caller.user_id)
        if page is None:
            await responder.reply_privately(NO_HISTORY)
            return
        embed, buttons = page
        await responder.reply_privately(embed=embed, view=buttons_view(buttons))

    async def turn(self, caller: Caller, responder: Responder, press: Press) -> None:
        """Older or Newer: replace the page in place."""
        cursor = (
            {"older_than": press.job_id} if press.action is JobAction.HISTORY_NEXT else {"newer_than": press.job_id}
        )
        page = await self.page(caller.user_id, **cursor)
        if page is None:
            await responder.reply_privately(NO_HISTORY)
            return
        embed, buttons = page
        await responder.update_pressed(embed=embed, view=buttons_view(buttons))


def build_history_command(service: HistoryService) -> app_commands.Command:  # type: ignore[type-arg]
    """The /history slash command."""

    @app_commands.command(name="history", description="Your recent results, with buttons to redo or upscale them")
    async def history(interaction: discord.Interaction) -> None:
        caller, responder = caller_and_responder(interaction)
        await service.show(caller, responder)

    return history
