"""The interaction port: what services know of who asks and where (`Caller`, and the options a command names),
and how they answer (`Responder`). Services take these, never a `discord.Interaction`; `bot.interactions.adapter`
builds them where an interaction arrives, and the tests hand services an in-memory Responder."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import discord

# Discord refuses a whole message past this many characters of content.
MESSAGE_MAX = 2000


def fit_lines(lines: list[str], max_chars: int, max_lines: int | None = None) -> list[str]:
    """The first lines, up to `max_lines` and `max_chars` joined by newlines, and a last one saying how many more
    there are."""
    kept: list[str] = []
    for line in lines:
        if len(kept) == max_lines or sum(len(k) + 1 for k in kept) + len(line) > max_chars:
            return [*kept, f"… and {len(lines) - len(kept)} more"]
        kept.append(line)
    return kept


@dataclass(frozen=True)
class Caller:
    """Who asks and where, read once from the interaction: all that services know of it."""

    user_id: int
    user_name: str
    guild_id: int | None
    channel_id: int | None
    role_ids: tuple[int, ...] = ()
    # A thread's parent channel, whose policy the thread follows.
    parent_id: int | None = None
    age_restricted: bool = False
    manage_guild: bool = False
    manage_messages: bool = False
    # What the bot lacks in the channel to post results there (none in a DM, where no server's permissions apply).
    bot_missing: tuple[str, ...] = ()
    upload_limit: int | None = None
    # The message whose button was pressed, and whether only the presser sees it (such as a /history page).
    message_id: int | None = None
    message_ephemeral: bool = False
    # A modal's text inputs as submitted, by custom_id.
    values: Mapping[str, str] = field(default_factory=dict)

    @property
    def policy_channel_id(self) -> int | None:
        """The channel whose policy applies here: a thread follows its parent."""
        return self.parent_id if self.parent_id is not None else self.channel_id


@dataclass(frozen=True)
class MemberOption:
    """A member a command names in an option."""

    id: int
    role_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class ChannelOption:
    """A channel a command names in an option."""

    id: int
    age_restricted: bool = False


class ResponseFailed(Exception):
    """Discord refused an answer (the interaction expired, the message is gone, a permission is missing)."""


class Responder(Protocol):
    """How a service answers the interaction it was handed; the first call must come within Discord's 3 s."""

    async def reply_privately(
        self,
        text: str | None = None,
        *,
        embed: discord.Embed | None = None,
        view: discord.ui.View | None = None,
        quiet: bool = False,
    ) -> None:
        """A message only the member sees, in place of a "thinking…" one; `quiet`: its mentions ping no one."""

    async def note_privately(self, text: str) -> None:
        """A message only the member sees, after the answer (the acknowledgement stays)."""

    async def think(self, *, private: bool) -> None:
        """Show "thinking…" (to the member alone when `private`) while the answer takes longer than 3 s."""

    async def acknowledge(self, text: str, view: discord.ui.View) -> int:
        """The public answer, in place of a public "thinking…"; its message id, or ResponseFailed."""

    async def open_modal(self, modal: discord.ui.Modal) -> None:
        """Answer with a modal for the member to fill in."""

    async def update_pressed(self, *, embed: discord.Embed, view: discord.ui.View) -> None:
        """Replace what the pressed message shows, in place."""

    async def delete_pressed(self) -> None:
        """Delete the message whose button was pressed; ResponseFailed when Discord will not."""
