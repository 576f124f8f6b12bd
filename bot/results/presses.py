"""What a button press does: a new job derived from the stored one, through the same intake; or a delete."""

from __future__ import annotations

import asyncio
import io
import logging
import random
from collections.abc import Awaitable, Callable, Mapping

import discord
from PIL import Image, UnidentifiedImageError

from bot.pipeline.intake import DMS_OFF, Intake, answer_privately, check_channel, ready_engine
from bot.pipeline.source_images import SourceImages
from bot.results.buttons import BadButton, Press
from core.jobs import Job, Requester
from core.params import MAX_SEED, InvalidParams
from core.wire import EngineReady

log = logging.getLogger(__name__)

UNKNOWN_BUTTON = "I don't know that button (it may be from an older version of me): use /imagine again."
UNKNOWN_JOB = "I have no record of that result any more: use /imagine again."
IMAGE_GONE = "The image this works from is gone, from my disk and from Discord: use /imagine again."
WITHHELD = "The safety checker flagged that image, so nothing is made from it: pick another image or a new seed."

# Presses that only take something away, which still work in DMs while the bot is off there: a member can still
# cancel a job or delete a result made while DMs were allowed.
_TAKE_AWAY = ("cancel", "delete")
# A press another service answers (share, remix, …), before any job is looked up.
PressHandler = Callable[[discord.Interaction, Press], Awaitable[object]]


def requester_for(interaction: discord.Interaction, job: Job, now: float) -> Requester:
    """Who pressed, where: the result answers the message pressed, or for a private message (such as
    /history) the job's own result when that is in this channel."""
    message = interaction.message
    reply_to = message.id if message is not None else None
    if message is not None and message.flags.ephemeral:
        reply_to = job.result_message_id if job.channel_id == interaction.channel_id else None
    return Requester(
        user_id=interaction.user.id,
        user_name=interaction.user.display_name,
        guild_id=interaction.guild_id,
        channel_id=check_channel(interaction),
        now=now,
        reply_to=reply_to,
    )


def image_size(png: bytes) -> tuple[int, int]:
    """An image's width and height; InvalidParams when the bytes are no image."""
    try:
        with Image.open(io.BytesIO(png)) as image:
            return image.size
    except (UnidentifiedImageError, OSError):
        raise InvalidParams(IMAGE_GONE) from None


class PressService:
    """Turns a press into a job like /imagine does, so the same queue (and limits) apply."""

    def __init__(
        self,
        *,
        intake: Intake,
        sources: SourceImages,
        engine_ready: Callable[[], EngineReady | None],
        cancel: Callable[[Job, int], Awaitable[str]],
        seed_source: random.Random | None = None,
        handlers: Mapping[str, PressHandler] | None = None,
        allow_dms: bool = False,
    ) -> None:
        self.intake = intake
        self.sources = sources
        self.engine_ready = engine_ready
        self.cancel = cancel
        self.seed_source = seed_source or random.SystemRandom()
        self.handlers = dict(handlers or {})
        self.allow_dms = allow_dms

    async def press(self, interaction: discord.Interaction, custom_id: str) -> Job | None:
        """Answer a press: an ephemeral sentence, a delete, or a stored, acknowledged, queued job."""
        try:
            press = Press.parse(custom_id)
        except BadButton:
            log.info("unknown button %r pressed by %s", custom_id, interaction.user.id)
            await interaction.response.send_message(UNKNOWN_BUTTON, ephemeral=True)
            return None
        if interaction.guild_id is None and not self.allow_dms and press.action not in _TAKE_AWAY:
            await interaction.response.send_message(DMS_OFF, ephemeral=True)
            return None
        if press.action in self.handlers:
            await self.handlers[press.action](interaction, press)
            return None
        job = await self.intake.store.get(press.job_id)
        if job is None:
            await interaction.response.send_message(UNKNOWN_JOB, ephemeral=True)
            return None
        if press.action == "delete":
            await self._delete(interaction, job)
            return None
        if press.action == "cancel":
            await self._cancel(interaction, job)
            return None
        try:
            if not await self._source_kept(job, press):
                # It comes back from the result message on Discord, which may take longer than the 3 s allowed.
                await interaction.response.defer(thinking=True)
            child = await self._derive(interaction, job, press)
        except InvalidParams as exc:
            await answer_privately(interaction, str(exc))
            return None
        return await self.intake.accept(interaction, child)

    async def _source_kept(self, job: Job, press: Press) -> bool:
        """Whether the image the press works from is on disk (a reroll of a first draw needs none)."""
        if press.action != "reroll":
            return await asyncio.to_thread(self.sources.images.has, job.id, press.index or 1)
        if job.parent_id is None or job.source_index is None:
            return True
        return await asyncio.to_thread(self.sources.images.has, job.parent_id, job.source_index)

    async def _source_size(self, job: Job, index: int) -> tuple[int, int]:
        png = await self.sources.get(job, index)
        if png is None:
            raise InvalidParams(IMAGE_GONE)
        # Reading an image's header is quick, but one fetched back from Discord may be anything: off the loop.
        return await asyncio.to_thread(image_size, png)

    async def _derive(self, interaction: discord.Interaction, job: Job, press: Press) -> Job:
        ready = ready_engine(self.engine_ready)
        requester = requester_for(interaction, job, self.intake.clock())
        seed = self.seed_source.randrange(MAX_SEED + 1)
        if press.action == "reroll":
            if job.parent_id is not None and job.source_index is not None:
                parent = await self.intake.store.get(job.parent_id)
                if parent is None:
                    raise InvalidParams(UNKNOWN_JOB)
                if job.source_index in parent.withheld:
                    raise InvalidParams(WITHHELD)
                await self._source_size(parent, job.source_index)
            child = job.rerolled(requester, seed)
        else:
            index = press.index or 1
            if index > job.params.count:
                raise InvalidParams(f"That result has {job.params.count} images, not {index}.")
            if index in job.withheld:
                raise InvalidParams(WITHHELD)
            size = await self._source_size(job, index)
            action = press.action
            if action.startswith("vary-"):
                child = job.variation(requester, index, size, action.removeprefix("vary-"), seed)
            elif action == "upscale":
                # The image's own seed: the detail pass starts from the noise that drew it.
                child = job.upscaled(requester, index, size, job.params.seeds()[index - 1])
            elif action.startswith("zoom-"):
                child = job.zoomed_out(requester, index, size, float(action.removeprefix("zoom-")), seed)
            else:
                child = job.panned(requester, index, size, action.removeprefix("pan-"), seed)
        self.intake.check_fits(child.params, ready)
        return child

    @staticmethod
    async def _allowed(interaction: discord.Interaction, job: Job, may: bool, who: str, verb: str) -> bool:
        """The job's own member always may; anyone else only if `may`, or they get a sentence saying who can."""
        if interaction.user.id == job.user_id or may:
            return True
        await interaction.response.send_message(
            f"Only <@{job.user_id}> or {who} can {verb} this.",
            ephemeral=True,
            allowed_mentions=discord.AllowedMentions.none(),
        )
        return False

    async def _cancel(self, interaction: discord.Interaction, job: Job) -> None:
        """Its member or an admin (Manage Server) may cancel a job that waits or runs."""
        if await self._allowed(interaction, job, interaction.permissions.manage_guild, "an admin", "cancel"):
            await interaction.response.send_message(await self.cancel(job, interaction.user.id), ephemeral=True)

    async def _delete(self, interaction: discord.Interaction, job: Job) -> None:
        """Only the member who asked, or someone allowed to manage messages, may delete a result."""
        if not await self._allowed(
            interaction, job, interaction.permissions.manage_messages, "someone with Manage Messages", "delete"
        ):
            return
        if interaction.message is None:
            await interaction.response.send_message(UNKNOWN_JOB, ephemeral=True)
            return
        try:
            await interaction.message.delete()
        except discord.HTTPException as exc:
            log.warning("job %s: could not delete its result: %s", job.id, exc)
            await interaction.response.send_message("Discord would not let me delete that message.", ephemeral=True)
            return
        await interaction.response.send_message("Deleted.", ephemeral=True)
        log.info("job %s: result deleted by %s", job.id, interaction.user.id)
