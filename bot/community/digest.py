"""The weekly digest: the most-reacted images shared in a guild's art channel that week, posted there."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import discord

from bot.community.sharing import message_link
from bot.community.store import CommunityStore, GuildSettings, Share
from bot.pipeline.progress import Clock

log = logging.getLogger(__name__)

WEEK = 7 * 86400.0
TOP = 5
# How often the background task looks for a digest that is due.
CHECK_INTERVAL = 3600.0


@dataclass(frozen=True)
class Ranked:
    """A shared image and the reactions its post has gathered."""

    share: Share
    reactions: int


def top_shares(ranked: list[Ranked], top: int = TOP) -> list[Ranked]:
    """The most-reacted shares, at least one reaction each, ties to the earlier share."""
    reacted = [r for r in ranked if r.reactions > 0]
    return sorted(reacted, key=lambda r: (-r.reactions, r.share.at))[:top]


def digest_text(winners: list[Ranked]) -> str:
    lines = ["🏆 **This week's most-loved images**"]
    for place, entry in enumerate(winners, start=1):
        share = entry.share
        assert share.message_id is not None
        link = message_link(share.guild_id, share.channel_id, share.message_id)
        lines.append(f"{place}. {link} — {entry.reactions} reaction{'s' if entry.reactions != 1 else ''}")
    return "\n".join(lines)


def digest_nonce(guild_id: int, since: float) -> str:
    """The same for every attempt at one week's digest, so Discord posts it only once."""
    return f"sdbot-d-{guild_id}-{int(since)}"


class Digest:
    """Counts reactions by fetching each shared message, and posts the week's best once a week per guild."""

    def __init__(self, *, community: CommunityStore, client: discord.Client, clock: Clock) -> None:
        self.community = community
        self.client = client
        self.clock = clock

    async def _reactions(self, share: Share) -> int:
        assert share.message_id is not None
        channel = self.client.get_partial_messageable(share.channel_id, guild_id=share.guild_id)
        try:
            message = await channel.fetch_message(share.message_id)
        except discord.HTTPException:
            return 0  # deleted since: it takes no part
        return sum(reaction.count for reaction in message.reactions)

    async def post(self, settings: GuildSettings, now: float) -> discord.Message | None:
        """Post the digest of the shares since the last one (nothing when none got a reaction) and record it."""
        assert settings.art_channel_id is not None
        since = settings.digest_at if settings.digest_at is not None else now - WEEK
        shares = await self.community.shares_since(settings.guild_id, since)
        winners = top_shares([Ranked(share, await self._reactions(share)) for share in shares])
        message = None
        if winners:
            channel = self.client.get_partial_messageable(settings.art_channel_id, guild_id=settings.guild_id)
            try:
                message = await channel.send(
                    digest_text(winners),
                    allowed_mentions=discord.AllowedMentions.none(),
                    # Posted once even if the bot dies between posting and recording it (discord.py enforces it).
                    nonce=digest_nonce(settings.guild_id, since),
                )
            except discord.HTTPException as exc:
                log.warning("guild %s: could not post the weekly digest: %s", settings.guild_id, exc)
                return None
        await self.community.digest_posted(settings.guild_id, now)
        return message

    async def run_due(self) -> list[discord.Message]:
        """Post every digest a week or more after the last one (or after it was turned on)."""
        now = self.clock()
        posted = []
        for settings in await self.community.digest_guilds():
            if settings.digest_at is None or now - settings.digest_at >= WEEK:
                message = await self.post(settings, now)
                if message is not None:
                    posted.append(message)
        return posted
