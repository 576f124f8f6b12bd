"""What a button press does: a new job derived from the stored one, through the same intake; or a delete."""

from __future__ import annotations

import asyncio
import io
import logging
import random
from collections.abc import Awaitable, Callable, Mapping

from PIL import Image, UnidentifiedImageError

from bot.interactions.port import Caller, Responder, ResponseFailed
from bot.pipeline.intake import DMS_OFF, Intake, check_channel, ready_engine
from bot.pipeline.source_images import SourceImages
from bot.results.buttons import Action, ImageAction, JobAction, Press
from core.jobs import Job, Requester
from core.params import LANCZOS, MAX_SEED, InvalidParams
from core.wire import EngineReady

log = logging.getLogger(__name__)

UNKNOWN_BUTTON = "I don't know that button (it may be from an older version of me): use /imagine again."
UNKNOWN_JOB = "I have no record of that result any more: use /imagine again."
IMAGE_GONE = "The image this works from is gone, from my disk and from Discord: use /imagine again."
WITHHELD = "The safety checker flagged that image, so nothing is made from it: pick another image or a new seed."

# Presses that only take something away, which still work in DMs while the bot is off there: a member can still
# cancel a job or delete a result made while DMs were allowed.
_TAKE_AWAY = (JobAction.CANCEL, JobAction.DELETE)
# A press another service answers (share, remix, …), before any job is looked up.
PressHandler = Callable[[Caller, Responder, Press], Awaitable[object]]


def requester_for(caller: Caller, job: Job, now: float) -> Requester:
    """Who pressed, where: the result answers the message pressed, or for a private message (such as
    /history) the job's own result when that is in this channel."""
    reply_to = caller.message_id
    if caller.message_ephemeral:
        reply_to = job.result_message_id if job.channel_id == caller.channel_id else None
    return Requester(
        user_id=caller.user_id,
        user_name=caller.user_name,
        guild_id=caller.guild_id,
        channel_id=check_channel(caller),
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
        handlers: Mapping[Action, PressHandler] | None = None,
        allow_dms: bool = False,
        upscaler_for: Callable[[int | None], str] = lambda guild_id: LANCZOS,
    ) -> None:
        # The upscaler the U button runs in a server (its admins' pick, else the first installed, else Lanczos).
        self.upscaler_for = upscaler_for
        self.intake = intake
        self.sources = sources
        self.engine_ready = engine_ready
        self.cancel = cancel
        self.seed_source = seed_source or random.SystemRandom()
        self.handlers = dict(handlers or {})
        self.allow_dms = allow_dms

    @staticmethod
    async def unknown(caller: Caller, responder: Responder, custom_id: str) -> None:
        """A button this bot did not make, or no longer understands: a sentence, not "This interaction failed"."""
        log.info("unknown button %r pressed by %s", custom_id, caller.user_id)
        await responder.reply_privately(UNKNOWN_BUTTON)

    async def press(self, caller: Caller, responder: Responder, press: Press) -> Job | None:
        """Answer a press: an ephemeral sentence, a delete, or a stored, acknowledged, queued job."""
        if caller.guild_id is None and not self.allow_dms and press.action not in _TAKE_AWAY:
            await responder.reply_privately(DMS_OFF)
            return None
        if press.action in self.handlers:
            await self.handlers[press.action](caller, responder, press)
            return None
        job = await self.intake.store.get(press.job_id)
        if job is None:
            await responder.reply_privately(UNKNOWN_JOB)
            return None
        if press.action is JobAction.DELETE:
            await self._delete(caller, responder, job)
            return None
        if press.action is JobAction.CANCEL:
            await self._cancel(caller, responder, job)
            return None
        try:
            if not await self._source_kept(job, press):
                # It comes back from the result message on Discord, which may take longer than the 3 s allowed.
                await responder.think(private=False)
            child = await self._derive(caller, job, press)
        except InvalidParams as exc:
            await responder.reply_privately(str(exc))
            return None
        return await self.intake.accept(caller, responder, child)

    async def _source_kept(self, job: Job, press: Press) -> bool:
        """Whether the image the press works from is on disk (a reroll of a first draw needs none)."""
        if press.action is not JobAction.REROLL:
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

    async def _derive(self, caller: Caller, job: Job, press: Press) -> Job:
        ready = ready_engine(self.engine_ready)
        requester = requester_for(caller, job, self.intake.clock())
        seed = self.seed_source.randrange(MAX_SEED + 1)
        if press.action is JobAction.REROLL:
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
            action = ImageAction(press.action)
            if action.family == "vary":
                child = job.variation(requester, index, size, action.argument, seed)
            elif action is ImageAction.UPSCALE:
                # The image's own seed: the detail pass starts from the noise that drew it.
                seed = job.params.seeds()[index - 1]
                # The upscaler folder is listed (subfolders too) beside the event loop.
                upscaler = await asyncio.to_thread(self.upscaler_for, caller.guild_id)
                child = job.upscaled(requester, index, size, seed, upscaler)
            elif action is ImageAction.FACES:
                child = job.faces_fixed(requester, index, size, job.params.seeds()[index - 1])
            elif action.family == "zoom":
                child = job.zoomed_out(requester, index, size, float(action.argument), seed)
            else:
                child = job.panned(requester, index, size, action.argument, seed)
        self.intake.check_fits(child.params, ready)
        return child

    @staticmethod
    async def _allowed(caller: Caller, responder: Responder, job: Job, may: bool, who: str, verb: str) -> bool:
        """The job's own member always may; anyone else only if `may`, or they get a sentence saying who can."""
        if caller.user_id == job.user_id or may:
            return True
        await responder.reply_privately(f"Only <@{job.user_id}> or {who} can {verb} this.", quiet=True)
        return False

    async def _cancel(self, caller: Caller, responder: Responder, job: Job) -> None:
        """Its member or an admin (Manage Server) may cancel a job that waits or runs."""
        if await self._allowed(caller, responder, job, caller.manage_guild, "an admin", "cancel"):
            await responder.reply_privately(await self.cancel(job, caller.user_id))

    async def _delete(self, caller: Caller, responder: Responder, job: Job) -> None:
        """Only the member who asked, or someone allowed to manage messages, may delete a result."""
        if not await self._allowed(
            caller, responder, job, caller.manage_messages, "someone with Manage Messages", "delete"
        ):
            return
        if caller.message_id is None:
            await responder.reply_privately(UNKNOWN_JOB)
            return
        try:
            await responder.delete_pressed()
        except ResponseFailed as exc:
            log.warning("job %s: could not delete its result: %s", job.id, exc)
            await responder.reply_privately("Discord would not let me delete that message.")
            return
        await responder.reply_privately("Deleted.")
        log.info("job %s: result deleted by %s", job.id, caller.user_id)
