"""⭐ Share: one image of a result, posted once to the guild's art channel with credit and its settings."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import discord

from bot.community.store import CommunityStore
from bot.interactions.adapter import is_age_restricted, policy_channel_id
from bot.interactions.port import Caller, Responder
from bot.pipeline.delivery import DEFAULT_SIZE_LIMIT, Delivery
from bot.pipeline.progress import Clock
from bot.pipeline.source_images import SourceImages
from bot.pipeline.store import JobStore
from bot.policy.store import PolicyStore
from bot.results.buttons import Press, buttons_view, shared_buttons
from bot.results.presses import IMAGE_GONE, UNKNOWN_JOB
from bot.results.render import settings_embed
from core.infotext import ModelInfo
from core.jobs import Flagged, Job

log = logging.getLogger(__name__)

FLAGGED = "The safety checker flagged that image, so it stays out of the art channel."

NO_ART_CHANNEL = (
    "This server has no art channel yet: ask someone with Manage Server to pick one with `/sdadmin artchannel`."
)
SHARING_NOW = "That image is being shared right now: look in the art channel in a moment."


def message_link(guild_id: int | None, channel_id: int, message_id: int) -> str:
    """The jump link Discord shows for a message."""
    return f"https://discord.com/channels/{guild_id if guild_id is not None else '@me'}/{channel_id}/{message_id}"


def share_embed(job: Job, index: int, model: ModelInfo | None, filename: str) -> discord.Embed:
    """Credit, prompt and settings of the shared image, and a link back to where it was made."""
    seed = job.params.seeds()[index - 1]
    embed = settings_embed(job, [seed], model.name if model is not None else None, discord.Colour.gold())
    embed.set_author(name=f"⭐ by {job.user_name}")
    if job.result_message_id is not None:
        original = message_link(job.guild_id, job.channel_id, job.result_message_id)
        embed.add_field(name="Original", value=f"[Jump to the result]({original})", inline=False)
    embed.set_image(url=f"attachment://{filename}")
    embed.set_footer(text=f"job {job.id} · image {index}")
    return embed


@dataclass(frozen=True)
class _Request:
    """A ⭐ press that passed the checks needing no Discord call: which image, to which art channel."""

    job: Job
    index: int
    art_channel_id: int


def blocked_here(found: str, channel_id: int) -> str:
    """The refusal when the art channel's block list matches the prompt."""
    return f"“{found}” is on the block list of <#{channel_id}>, so this image stays out of it."


def unchecked_here(channel_id: int) -> str:
    """The refusal when the art channel checks images and this one never was."""
    return (
        f"The safety checker never looked at this image (it was made where it does not run), and <#{channel_id}>"
        " only takes checked images: it stays out of the art channel."
    )


class ShareService:
    """Answers ⭐ presses: claims the image in SQLite (once, atomically), then posts it to the art channel."""

    def __init__(
        self,
        *,
        store: JobStore,
        community: CommunityStore,
        policy: PolicyStore,
        sources: SourceImages,
        client: discord.Client,
        clock: Clock,
    ) -> None:
        self.store = store
        self.community = community
        self.policy = policy
        self.sources = sources
        self.client = client
        self.clock = clock

    async def press(self, caller: Caller, responder: Responder, press: Press) -> None:
        """Share image `press.index` of the job, or say in a sentence why not (or where it already is)."""
        checked = await self._checked(caller, press)
        if isinstance(checked, str):
            await responder.reply_privately(checked)
            return
        # What follows may call Discord (channel, image download, upload): longer than the 3 s allowed for an answer.
        await responder.think(private=True)
        await responder.reply_privately(await self._share(caller, checked))

    async def _checked(self, caller: Caller, press: Press) -> _Request | str:
        """The share to make, or the sentence refusing it, from SQLite and the caller alone."""
        job = await self.store.get(press.job_id)
        index = press.index or 1
        if job is None or index > job.params.count:
            return UNKNOWN_JOB
        if caller.guild_id is None or job.guild_id != caller.guild_id:
            return "Images can only be shared in the server they were made in."
        if caller.user_id != job.user_id and not caller.manage_messages:
            return f"Only <@{job.user_id}> or someone with Manage Messages can share this."
        if index in job.flagged:
            return FLAGGED
        settings = await self.community.settings(caller.guild_id)
        if settings.art_channel_id is None:
            return NO_ART_CHANNEL
        return _Request(job, index, settings.art_channel_id)

    async def _art_channel_refusal(self, job: Job, channel_id: int) -> str | None:
        """Why the art channel's own rules would refuse this job, if they would."""
        channel = self.client.get_channel(channel_id)
        if channel is None:
            try:
                channel = await self.client.fetch_channel(channel_id)
            except (discord.HTTPException, discord.InvalidData) as exc:
                # Unknown age restriction: the stricter rules of an ordinary channel apply.
                log.info("job %s: could not look up art channel %s: %s", job.id, channel_id, exc)
        policy = await self.policy.policy(job.guild_id)
        rules = policy.rules(policy_channel_id(channel, channel_id), is_age_restricted(channel))
        found = rules.block_list.find(job.params.prompt)
        if found is not None:
            return blocked_here(found, channel_id)
        if rules.on_flagged is not Flagged.POST and job.on_flagged is Flagged.POST:
            return unchecked_here(channel_id)
        return None

    async def _share(self, caller: Caller, request: _Request) -> str:
        """Claim and post the image; the sentence to answer with."""
        job, index, channel_id = request.job, request.index, request.art_channel_id
        refusal = await self._art_channel_refusal(job, channel_id)
        if refusal is not None:
            return refusal
        assert job.guild_id is not None
        existing = await self.community.claim_share(
            job.id, index, job.guild_id, channel_id, caller.user_id, self.clock()
        )
        if existing is not None:
            if existing.message_id is None:
                return SHARING_NOW
            link = message_link(existing.guild_id, existing.channel_id, existing.message_id)
            return f"That image is already shared: {link}"
        try:
            png = await self.sources.get(job, index)
            if png is None:
                await self.community.release_share(job.id, index)
                return IMAGE_GONE
            message = await self._post(job, index, png, channel_id, caller)
            await self.community.share_posted(job.id, index, message.id)
        except discord.HTTPException as exc:
            log.warning("job %s: could not share image %d: %s", job.id, index, exc)
            await self.community.release_share(job.id, index)
            return (
                f"I couldn't post in <#{channel_id}>: ask an admin to let me send messages, embed links and attach"
                " files there."
            )
        except BaseException:
            # A claim left behind would say "being shared right now" until it goes stale.
            await self.community.release_share(job.id, index)
            raise
        log.info("job %s: image %d shared by %s", job.id, index, caller.user_id)
        return f"Shared: {message.jump_url}"

    async def _post(self, job: Job, index: int, png: bytes, channel_id: int, caller: Caller) -> discord.Message:
        fitted = await Delivery.fit(png, caller.upload_limit or DEFAULT_SIZE_LIMIT)
        filename = f"sdbot-{job.id}-{job.params.seeds()[index - 1]}.{fitted.extension}"
        details = await self.store.done_details(job.id)
        size = job.params.output_size
        channel = self.client.get_partial_messageable(channel_id, guild_id=job.guild_id)
        return await channel.send(
            content=f"⭐ <@{job.user_id}>'s image, shared by <@{caller.user_id}>",
            embed=share_embed(job, index, details[1] if details else None, filename),
            file=discord.File(io.BytesIO(fitted.data), filename=filename),
            view=buttons_view(shared_buttons(job, index, size)),
            allowed_mentions=discord.AllowedMentions.none(),
            # Posted once even if the bot dies between posting and recording it.
            nonce=f"sdbot-s-{job.id}-{index}",
        )
