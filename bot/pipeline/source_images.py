"""The image a button works from: from disk while kept, else fetched back from the result message on Discord."""

from __future__ import annotations

import asyncio
import logging

import discord

from bot.pipeline.images import ImageStore
from core.jobs import Job

log = logging.getLogger(__name__)


class SourceImages:
    """Image n of a finished job, wherever it still is."""

    def __init__(self, images: ImageStore, client: discord.Client) -> None:
        self.images = images
        self.client = client

    async def get(self, job: Job, index: int) -> bytes | None:
        """The PNG, or None when it is gone from disk and from Discord (deleted message or attachment)."""
        png = await asyncio.to_thread(self.images.load, job.id, index)
        if png is not None:
            return png
        if job.result_message_id is None or index in job.withheld:
            return None
        # Withheld images were never posted, so the attachments skip them.
        position = index - sum(1 for w in job.withheld if w < index)
        channel = self.client.get_partial_messageable(job.channel_id, guild_id=job.guild_id)
        try:
            message = await channel.fetch_message(job.result_message_id)
            if not 1 <= position <= len(message.attachments):
                return None
            png = await message.attachments[position - 1].read()
        except discord.HTTPException as exc:
            log.info("job %s: image %d is gone from Discord too: %s", job.id, index, exc)
            return None
        # Keep it again, so the next press on the same image needs no download.
        await asyncio.to_thread(self.images.save_one, job.id, index, png)
        return png
