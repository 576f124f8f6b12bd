"""Posting to Discord with the bot token: status edits on the acknowledgement, results as replies to it.

Only the acknowledgement uses the interaction; everything after goes through the channel endpoints, which
work after the 15-minute interaction token has expired (401/50027, 404/10062) and after restarts.
"""

from __future__ import annotations

import asyncio
import io
import logging
from typing import Any

import discord

from bot.results.buttons import result_view
from bot.results.render import SPOILER_PREFIX, done_text, failed_text, result_embed, result_file_stems, withheld_text
from core.jobs import Flagged, Job
from core.pngmeta import EncodedImage, fit_under
from core.wire import JobResult

log = logging.getLogger(__name__)

_MENTION_MEMBER_ONLY = discord.AllowedMentions(everyone=False, roles=False, users=True, replied_user=False)
_MENTION_NOBODY = discord.AllowedMentions.none()
# Every server accepts files of 10 MiB; a boosted one (as the interaction tells) more.
DEFAULT_SIZE_LIMIT = 10 * 1024 * 1024
# Errors after which Discord will refuse every further edit of a message: unknown message, edits to
# messages older than an hour capped, archived thread.
_UNEDITABLE = {10008, 30046, 50083}
PREVIEW_FILENAME = "preview.webp"


def result_nonce(job: Job) -> str:
    """The same for every attempt to post a job's result: with enforce_nonce, Discord posts it only once."""
    return f"sdbot-{job.id}"


class Delivery:
    """Everything the bot writes to a channel about a job after acknowledging it."""

    def __init__(self, client: discord.Client) -> None:
        self._client = client
        self._uneditable: set[int] = set()

    def _channel(self, job: Job) -> discord.PartialMessageable:
        return self._client.get_partial_messageable(job.channel_id, guild_id=job.guild_id)

    def _status_message(self, job: Job) -> discord.PartialMessage | None:
        if job.message_id is None:
            return None
        return self._channel(job).get_partial_message(job.message_id)

    def _reply(self, job: Job) -> dict[str, Any]:
        """Send options that make a post a reply (to the pressed result, else the status), pinging only its member
        (nobody, for a member who asked for quiet results)."""
        options: dict[str, Any] = {"allowed_mentions": _MENTION_NOBODY if job.quiet else _MENTION_MEMBER_ONLY}
        target = job.reply_to or job.message_id
        if target is not None:
            reply_to = self._channel(job).get_partial_message(target)
            options["reference"] = reply_to.to_reference(fail_if_not_exists=False)
        return options

    async def edit_status(self, job: Job, text: str, *, final: bool = False, preview: bytes | None = None) -> None:
        """Rewrite the acknowledgement, with a preview of the drawing when there is one (`final` also removes
        its Cancel button and preview); a refused edit costs only the status line, so it is logged, not raised."""
        message = self._status_message(job)
        if message is None or message.id in self._uneditable:
            return
        options: dict[str, Any] = {"content": text}
        if final:
            # Also after a restart, when nobody remembers whether a preview is showing.
            options.update(view=None, attachments=[])
        elif preview is not None:
            options["attachments"] = [discord.File(io.BytesIO(preview), filename=PREVIEW_FILENAME)]
        try:
            await message.edit(**options)
        except discord.HTTPException as exc:
            log.warning("job %s: could not edit its status message: %s", job.id, exc)
            if exc.code in _UNEDITABLE:
                self._uneditable.add(message.id)

    async def post_result(self, job: Job, result: JobResult) -> discord.Message:
        """Post the PNGs with their parameters as a reply that pings the member, then point the status at it."""
        limit = job.size_limit or DEFAULT_SIZE_LIMIT
        files = []
        withheld: list[int] = []
        for index, (image, name) in enumerate(zip(result.images, result_file_stems(job, result), strict=True), 1):
            treatment = job.on_flagged if image.flagged else Flagged.POST
            if treatment is Flagged.WITHHOLD:
                withheld.append(index)
                continue
            fitted = await self.fit(image.png, limit)
            # Discord blurs an attachment whose name starts with SPOILER_ until a member clicks it.
            prefix = SPOILER_PREFIX if treatment is Flagged.SPOILER else ""
            files.append(discord.File(io.BytesIO(fitted.data), filename=f"{prefix}{name}.{fitted.extension}"))
        content = f"<@{job.user_id}>"
        if withheld:
            content += f" {withheld_text(len(withheld), len(result.images))}"
        message = await self._channel(job).send(
            content=content,
            embed=result_embed(job, result),
            files=files,
            view=result_view(job, len(result.images), hidden=frozenset(withheld)),
            nonce=result_nonce(job),
            **self._reply(job),
        )
        await self.edit_status(job, done_text(result.seconds, message.jump_url), final=True)
        return message

    @staticmethod
    async def fit(png: bytes, limit: int) -> EncodedImage:
        """The image as it can be uploaded: over the limit, a PNG becomes a WebP or JPEG with the infotext in EXIF
        (never a 413). Encoding takes up to seconds of CPU, so it runs beside the event loop."""
        return await asyncio.to_thread(fit_under, png, limit)

    async def post_failure(self, job: Job, sentence: str) -> None:
        """Tell the member, by a ping, why their job produced nothing."""
        await self.edit_status(job, failed_text(sentence), final=True)
        try:
            await self._channel(job).send(content=f"<@{job.user_id}> {failed_text(sentence)}", **self._reply(job))
        except discord.HTTPException as exc:
            log.error("job %s: could not tell its member it failed: %s", job.id, exc)
