"""What a test configures: users, the application's team, guilds with their channels, roles and members, uploads."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import discord

from tests.support.fake_discord.constants import (
    ALL_PERMISSIONS,
    CHANNEL_ID,
    DEFAULT_BOT_PERMISSIONS,
    DEFAULT_EVERYONE_PERMISSIONS,
    EPOCH,
    FILESIZE_BY_TIER,
    GUILD_ID,
    OWNER_ID,
)


@dataclass(frozen=True)
class FakeUser:
    """A Discord user known to the fake."""

    id: int
    username: str
    bot: bool = False
    global_name: str | None = None

    def payload(self) -> dict[str, Any]:
        """The user object as the API sends it."""
        return {
            "id": str(self.id),
            "username": self.username,
            "discriminator": "0",
            "global_name": self.global_name,
            "avatar": None,
            "bot": self.bot,
            "public_flags": 0,
        }


@dataclass(frozen=True)
class FakeTeamMember:
    """A member of the team that owns the application; role is "admin", "developer" or "read_only"."""

    user: FakeUser
    role: str = "developer"
    accepted: bool = True


@dataclass(frozen=True)
class FakeTeam:
    """The team that owns the application (Developer Portal → Teams)."""

    id: int
    owner: FakeUser
    members: Sequence[FakeTeamMember] = ()
    name: str = "the team"

    def payload(self) -> dict[str, Any]:
        """The team object of the application, its owner listed as an admin member."""
        members = [FakeTeamMember(self.owner, "admin"), *(m for m in self.members if m.user.id != self.owner.id)]
        return {
            "id": str(self.id),
            "name": self.name,
            "icon": None,
            "owner_user_id": str(self.owner.id),
            "members": [
                {
                    "membership_state": 2 if member.accepted else 1,
                    "permissions": ["*"],
                    "team_id": str(self.id),
                    "user": member.user.payload(),
                    "role": member.role,
                }
                for member in members
            ],
        }


@dataclass(frozen=True)
class FakeChannel:
    """A guild channel (type 0 = text)."""

    id: int = CHANNEL_ID
    name: str = "general"
    type: int = 0
    nsfw: bool = False
    topic: str | None = None
    position: int = 0
    parent_id: int | None = None

    def payload(self, guild_id: int | None) -> dict[str, Any]:
        """The channel object as the API sends it."""
        data: dict[str, Any] = {
            "id": str(self.id),
            "type": self.type,
            "name": self.name,
            "position": self.position,
            "permission_overwrites": [],
            "nsfw": self.nsfw,
            "topic": self.topic,
            "parent_id": None if self.parent_id is None else str(self.parent_id),
            "last_message_id": None,
            "rate_limit_per_user": 0,
        }
        if guild_id is not None:
            data["guild_id"] = str(guild_id)
        if self.type in (2, 13):  # voice and stage channels need these
            data.update(bitrate=64000, user_limit=0, rtc_region=None)
        if self.type in (10, 11, 12):  # threads need these
            metadata = {"archived": False, "auto_archive_duration": 1440, "archive_timestamp": EPOCH, "locked": False}
            data.update(owner_id=str(OWNER_ID), message_count=0, member_count=1, thread_metadata=metadata)
        return data


@dataclass(frozen=True)
class FakeRole:
    """A guild role; the @everyone role (id == guild id) is added automatically."""

    id: int
    name: str
    permissions: int = 0
    position: int = 1
    managed: bool = False

    def payload(self) -> dict[str, Any]:
        """The role object as the API sends it."""
        return {
            "id": str(self.id),
            "name": self.name,
            "permissions": str(self.permissions),
            "position": self.position,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "managed": self.managed,
            "mentionable": False,
            "icon": None,
            "unicode_emoji": None,
            "flags": 0,
        }


@dataclass(frozen=True)
class FakeMember:
    """A guild member: a user plus role ids."""

    user: FakeUser
    roles: Sequence[int] = ()
    nick: str | None = None


@dataclass(frozen=True)
class FakeGuild:
    """A guild the bot is in; defaults to one text channel and an unboosted server."""

    id: int = GUILD_ID
    name: str = "Test Guild"
    channels: Sequence[FakeChannel] = (FakeChannel(),)
    roles: Sequence[FakeRole] = ()
    members: Sequence[FakeMember] = ()
    owner_id: int = OWNER_ID
    premium_tier: int = 0
    preferred_locale: str = "en-US"
    features: Sequence[str] = ()
    everyone_permissions: int = DEFAULT_EVERYONE_PERMISSIONS
    bot_permissions: int = DEFAULT_BOT_PERMISSIONS

    @property
    def bot_role_id(self) -> int:
        """Id of the managed role given to the bot."""
        return self.id + 1

    @property
    def filesize_limit(self) -> int:
        """Per-file upload limit, as discord.py's ``guild.filesize_limit``."""
        return FILESIZE_BY_TIER[self.premium_tier]

    def all_roles(self) -> list[FakeRole]:
        """@everyone, the bot's managed role and the configured roles."""
        everyone = FakeRole(id=self.id, name="@everyone", permissions=self.everyone_permissions, position=0)
        bot_role = FakeRole(id=self.bot_role_id, name="bot", permissions=self.bot_permissions, managed=True)
        return [everyone, bot_role, *self.roles]

    def channel(self, channel_id: int) -> FakeChannel | None:
        """The channel with this id, if it is in this guild."""
        return next((c for c in self.channels if c.id == channel_id), None)

    def permissions_of(self, user_id: int, role_ids: Iterable[int]) -> int:
        """Guild-level permissions (channel overwrites are not modelled)."""
        if user_id == self.owner_id:
            return ALL_PERMISSIONS
        by_id = {r.id: r for r in self.all_roles()}
        value = self.everyone_permissions
        for role_id in role_ids:
            role = by_id.get(role_id)
            if role is not None:
                value |= role.permissions
        if value & discord.Permissions(administrator=True).value:
            return ALL_PERMISSIONS
        return value


@dataclass(frozen=True)
class FakeFile:
    """A file a user uploads as an attachment option."""

    filename: str
    data: bytes
    content_type: str | None = None
