"""The bot's owners, who alone may act on every server at once: SDBOT_OWNER_IDS, and the application's owner or
its team's admins and developers as Discord reports them (fetched at start, and again when someone unknown asks)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import discord

from bot.interactions.port import Caller, Responder
from bot.pipeline.progress import Clock

log = logging.getLogger(__name__)

# Someone not known as an owner makes the bot ask Discord again, at most this often.
REFRESH_S = 60.0
OWNERS = (
    "the bot's owners (the owner of its Discord application or that application's team, and the users its host"
    " lists in SDBOT_OWNER_IDS)"
)


def application_owners(app: discord.AppInfo) -> frozenset[int]:
    """Who owns an application: its team's owner, admins and developers (as discord.py counts them), else its
    owner."""
    if app.team is None:
        return frozenset({app.owner.id})
    roles = (discord.TeamMemberRole.admin, discord.TeamMemberRole.developer)
    members = {
        member.id
        for member in app.team.members
        if member.role in roles and member.membership_state is discord.TeamMembershipState.accepted
    }
    return frozenset(members | ({app.team.owner_id} if app.team.owner_id is not None else set()))


class Owners:
    """Answers "is this user one of the bot's owners?" from the setting and the application's info."""

    def __init__(
        self, *, configured: frozenset[int], fetch: Callable[[], Awaitable[discord.AppInfo]], clock: Clock
    ) -> None:
        self.configured = configured
        self.fetch = fetch
        self.clock = clock
        self._application: frozenset[int] = frozenset()
        self._fetched_at: float | None = None

    async def refresh(self) -> None:
        """Ask Discord who owns the application; on failure keep what was known (logged)."""
        self._fetched_at = self.clock()
        try:
            self._application = application_owners(await self.fetch())
        except discord.HTTPException as exc:
            log.warning("could not fetch the application's owners, keeping those known: %s", exc)

    async def is_owner(self, user_id: int) -> bool:
        """Whether `user_id` owns the bot; someone unknown makes it ask Discord again (a team may have changed)."""
        if user_id in self.configured or user_id in self._application:
            return True
        if self._fetched_at is None or self.clock() - self._fetched_at >= REFRESH_S:
            await self.refresh()
        return user_id in self._application


async def owner_allowed(caller: Caller, responder: Responder, owners: Owners, action: str) -> bool:
    """True for the bot's owners; anyone else is told privately that only they can do `action`, and who they are."""
    if await owners.is_owner(caller.user_id):
        return True
    await responder.reply_privately(f"Only {OWNERS} can {action}.")
    return False
