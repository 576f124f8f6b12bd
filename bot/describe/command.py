"""/describe: an attached image becomes prompts that would draw something like it, each with a button that runs
it through /imagine for whoever presses it."""

from __future__ import annotations

import discord
from discord import app_commands

from bot.describe.runner import NOT_INSTALLED, DescribeFailed, Describer
from bot.describe.store import Described
from bot.imagine.attachments import AttachmentInfo, check_image, fetch_image
from bot.imagine.command import ImagineOptions, ImagineService
from bot.interactions.adapter import caller_and_responder
from bot.interactions.port import MESSAGE_MAX, Caller, Responder, ResponseFailed
from bot.pipeline.progress import Clock
from bot.results.buttons import ButtonSpec, ImageAction, Press, buttons_view
from core.jobs import new_job_id
from core.params import MAX_PROMPT_CHARS, InvalidParams

GONE = "That description is no longer kept: run /describe again."
BUSY = "I'm describing another image right now: try again in a minute."
# What the answer shows of each prompt, so four fit in one message; the button runs the whole prompt.
SHOWN_CHARS = 400


def answer_text(filename: str, prompts: list[str]) -> str:
    """The public answer: the prompts, numbered as their buttons are."""
    lines = [f"**Prompts for {filename[:80]}** (press one to imagine it):"]
    for number, prompt in enumerate(prompts, 1):
        shown = prompt if len(prompt) <= SHOWN_CHARS else prompt[: SHOWN_CHARS - 1] + "…"
        lines.append(f"**{number}.** {shown}")
    return "\n".join(lines)[:MESSAGE_MAX]


class DescribeService:
    """Checks and downloads the image as an image prompt's, runs the captioning model, and keeps the prompts."""

    def __init__(self, *, describer: Describer, described: Described, imagine: ImagineService, clock: Clock) -> None:
        self.describer = describer
        self.described = described
        self.imagine = imagine
        self.clock = clock

    async def describe(self, caller: Caller, responder: Responder, image: AttachmentInfo) -> str | None:
        """Answer with the prompts and their buttons (the id they are kept under), or a private sentence."""
        if self.describer.model is None:
            await responder.reply_privately(NOT_INSTALLED)
            return None
        banned = await self.imagine.intake.quota.admin.ban_reason(caller.guild_id, caller.user_id)
        if banned is not None:
            await responder.reply_privately(f"You can't use me in this server: an admin has banned you ({banned}).")
            return None
        if self.describer.busy:
            await responder.reply_privately(BUSY)
            return None
        try:
            check_image(image)
        except InvalidParams as exc:
            await responder.reply_privately(str(exc))
            return None
        # Downloading and captioning take longer than the 3 s Discord allows for an answer.
        await responder.think(private=False)
        try:
            decoded = await fetch_image(image)
            prompts = [p[:MAX_PROMPT_CHARS] for p in await self.describer.describe(decoded.png)]
        except (InvalidParams, DescribeFailed) as exc:
            await responder.reply_privately(str(exc))
            return None
        described_id = new_job_id()
        await self.described.add(described_id, prompts, self.clock())
        buttons = [
            ButtonSpec(Press(ImageAction.DESCRIBE, described_id, number), f"Imagine {number}", row=0, emoji="🎨")
            for number in range(1, len(prompts) + 1)
        ]
        try:
            await responder.acknowledge(answer_text(image.filename, prompts), buttons_view(buttons))
        except ResponseFailed:
            return None
        return described_id

    async def press(self, caller: Caller, responder: Responder, press: Press) -> None:
        """Run prompt N of a /describe answer through /imagine for whoever pressed."""
        prompts = await self.described.prompts(press.job_id)
        index = press.index or 1
        if prompts is None or index > len(prompts):
            await responder.reply_privately(GONE)
            return
        await self.imagine.submit(caller, responder, ImagineOptions(prompt=prompts[index - 1]))


def build_describe_command(service: DescribeService) -> app_commands.Command:  # type: ignore[type-arg]
    """The /describe slash command."""

    @app_commands.command(name="describe", description="Get prompts that would draw something like an image")
    @app_commands.describe(image="The image to describe (PNG, JPEG or WebP)")
    async def describe(interaction: discord.Interaction, image: discord.Attachment) -> None:
        caller, responder = caller_and_responder(interaction)
        await service.describe(caller, responder, AttachmentInfo.of(image))

    return describe
