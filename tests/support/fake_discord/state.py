"""The fake's state: configuration, what it recorded, waiting on changes, lookups, and the failure summary."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from aiohttp import web

from tests.support.fake_discord.config import FakeGuild, FakeTeam, FakeUser
from tests.support.fake_discord.constants import API_PREFIX, APPLICATION_ID, DISCORD_EPOCH_MS, OWNER_ID, USER_ID
from tests.support.fake_discord.records import (
    FakeFailure,
    FakeInteraction,
    FakeMessage,
    FakeRequest,
    GatewayConnection,
    GatewaySession,
    StoredAttachment,
)

T = TypeVar("T")


class FakeState:
    """Configuration and recorded state shared by every part of the fake; tests read it through ``FakeDiscord``."""

    def __init__(
        self,
        *,
        application_id: int = APPLICATION_ID,
        bot_user: FakeUser | None = None,
        owner: FakeUser | None = None,
        team: FakeTeam | None = None,
        guilds: Sequence[FakeGuild] | None = None,
        users: Sequence[FakeUser] = (),
        token: str = "fake-bot-token",
        heartbeat_interval_ms: int = 1000,
        interaction_deadline: float | None = 3.0,
        dispatch_message_events: bool = True,
    ) -> None:
        self.application_id = application_id
        self.bot_user = bot_user or FakeUser(id=application_id, username="sdbot", bot=True)
        self.owner = owner or FakeUser(id=OWNER_ID, username="owner")
        self.team = team  # a test may give the application a team (or change it) while the client runs
        self.guilds: list[FakeGuild] = list(guilds) if guilds is not None else [FakeGuild()]
        self.token = token
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.interaction_deadline = interaction_deadline
        self.dispatch_message_events = dispatch_message_events

        self.users: dict[int, FakeUser] = {u.id: u for u in (self.bot_user, self.owner)}
        self.users.setdefault(USER_ID, FakeUser(id=USER_ID, username="alice"))
        for guild in self.guilds:
            for member in guild.members:
                self.users[member.user.id] = member.user
        for user in users:
            self.users[user.id] = user

        # Recorded state, all public for assertions.
        self.requests: list[FakeRequest] = []
        self.unhandled: list[FakeRequest] = []
        self.internal_errors: list[BaseException] = []
        self.commands: dict[int | None, list[dict[str, Any]]] = {}
        self.interactions: list[FakeInteraction] = []
        self.gateway_received: list[dict[str, Any]] = []  # every op the client sent
        self.identifies = 0
        self.resumes = 0
        self.failures: list[FakeFailure] = []
        # Cleared, attachment downloads (the CDN) wait until it is set again: a slow download, as a test times it.
        self.downloads = asyncio.Event()
        self.downloads.set()

        self._messages: dict[int, FakeMessage] = {}
        self._attachments: dict[int, StoredAttachment] = {}
        self._dm_channels: dict[int, int] = {}  # channel id -> recipient user id
        self._command_ids: dict[tuple[int | None, int, str], int] = {}
        self._interactions_by_id: dict[int, FakeInteraction] = {}
        self._interactions_by_token: dict[str, FakeInteraction] = {}
        self._session: GatewaySession | None = None
        self._conn: GatewayConnection | None = None
        self._sockets: set[web.WebSocketResponse] = set()
        self._gateway_lock: asyncio.Lock | None = None
        self._changed: asyncio.Event | None = None
        self._last_snowflake = 0
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    # ----------------------------------------------------------------- addresses

    @property
    def origin(self) -> str:
        """http://127.0.0.1:PORT"""
        assert self._port is not None, "call await fake.start() first"
        return f"http://127.0.0.1:{self._port}"

    @property
    def base_url(self) -> str:
        """The value for ``discord.http.Route.BASE``."""
        return self.origin + API_PREFIX

    @property
    def gateway_url(self) -> str:
        """The value for ``DiscordWebSocket.DEFAULT_GATEWAY``."""
        return f"ws://127.0.0.1:{self._port}/gateway"

    # ----------------------------------------------------------------- waiting

    def _notify(self) -> None:
        """Wake every wait_for; called after each state change."""
        if self._changed is not None:
            self._changed.set()
            self._changed = asyncio.Event()

    async def wait_for(self, predicate: Callable[[], T | None], timeout: float = 10.0, *, what: str | None = None) -> T:
        """Wait until ``predicate()`` (over fake state) is truthy, re-checking on every state change; return it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            result = predicate()
            if result:
                return result
            assert self._changed is not None, "call await fake.start() first"
            changed = self._changed
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except asyncio.TimeoutError:
                break
        result = predicate()
        if result:
            return result
        label = what or getattr(predicate, "__name__", "condition")
        raise AssertionError(f"timed out after {timeout}s waiting for {label}\n{self.summary()}")

    def summary(self) -> str:
        """A readable dump of the fake's state for failure messages."""
        lines = [
            f"gateway: connected={self._conn is not None and self._conn.live} identifies={self.identifies} "
            f"resumes={self.resumes} seq={self._session.seq if self._session else None} "
            f"last_heartbeat_seq={self._conn.last_heartbeat_seq if self._conn else None}",
            f"commands: { {k: [c['name'] for c in v] for k, v in self.commands.items()} }",
        ]
        lines.append(f"requests ({len(self.requests)}, last 15):")
        lines += [f"  {r.status} {r.method} {r.path} {_short(r.json)}" for r in self.requests[-15:]]
        if self.unhandled:
            lines.append("UNHANDLED: " + ", ".join(f"{r.method} {r.path}" for r in self.unhandled))
        if self.internal_errors:
            lines.append(f"INTERNAL ERRORS: {self.internal_errors!r}")
        for inter in self.interactions[-5:]:
            lines.append(
                f"interaction {inter.id} type={inter.type} {_short(inter.payload.get('data'))} "
                f"callbacks={[(c.type, _short(c.data)) for c in inter.callbacks]} original={inter.original_message_id} "
                f"followups={inter.followup_ids}"
            )
        for msg in list(self._messages.values())[-10:]:
            lines.append(
                f"message {msg.id} ch={msg.channel_id} via={msg.created_via} flags={msg.flags} edits={msg.edits} "
                f"deleted={msg.deleted} content={msg.content[:60]!r} embeds={len(msg.embeds)} "
                f"files={[a.filename for a in msg.attachments]} components={msg.custom_ids()}"
            )
        return "\n".join(lines)

    def assert_clean(self) -> None:
        """Fail if the client made requests the fake does not know, or the fake itself broke."""
        assert not self.internal_errors, f"fake discord internal errors: {self.internal_errors!r}\n{self.summary()}"
        assert not self.unhandled, (
            "unexpected requests: " + ", ".join(f"{r.method} {r.path}" for r in self.unhandled) + "\n" + self.summary()
        )

    # ----------------------------------------------------------------- queries

    def messages(self, channel_id: int | None = None) -> list[FakeMessage]:
        """Messages (deleted ones included, flagged) in a channel, or everywhere, oldest first."""
        return [m for m in self._messages.values() if channel_id is None or m.channel_id == channel_id]

    def message(self, message_id: int) -> FakeMessage | None:
        """The message with this id."""
        return self._messages.get(message_id)

    def attachment(self, attachment_id: int) -> StoredAttachment | None:
        """The attachment with this id."""
        return self._attachments.get(attachment_id)

    def guild(self, guild_id: int | None = None) -> FakeGuild:
        """The guild with this id (the first one by default)."""
        if guild_id is None:
            return self.guilds[0]
        for guild in self.guilds:
            if guild.id == guild_id:
                return guild
        raise AssertionError(f"no guild {guild_id} configured in the fake")

    def command(self, name: str, guild_id: int | None = None) -> dict[str, Any] | None:
        """A synced command by name: the guild's, else the global one."""
        for scope in (guild_id, None) if guild_id is not None else (None,):
            for cmd in self.commands.get(scope, []):
                if cmd["name"] == name:
                    return cmd
        return None

    # ----------------------------------------------------------------- lookups

    def _snowflake(self) -> int:
        value = (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22
        self._last_snowflake = max(value, self._last_snowflake + 1)
        return self._last_snowflake

    def _user(self, user_id: int) -> FakeUser:
        return self.users.get(user_id) or FakeUser(id=user_id, username=f"user{user_id}")

    def _channel_payload(self, channel_id: int) -> tuple[dict[str, Any], FakeGuild | None]:
        for guild in self.guilds:
            channel = guild.channel(channel_id)
            if channel is not None:
                return channel.payload(guild.id), guild
        if channel_id in self._dm_channels:
            recipient = self._user(self._dm_channels[channel_id])
            return {
                "id": str(channel_id),
                "type": 1,
                "last_message_id": None,
                "recipients": [recipient.payload()],
            }, None
        raise AssertionError(f"no channel {channel_id} in the fake")

    def dm_channel_id(self, user_id: int) -> int:
        """The DM channel between the bot and a user (created on first use)."""
        for channel_id, recipient in self._dm_channels.items():
            if recipient == user_id:
                return channel_id
        channel_id = self._snowflake()
        self._dm_channels[channel_id] = user_id
        return channel_id


def _short(value: Any, limit: int = 160) -> str:
    text = json.dumps(value, default=str) if value is not None else "-"
    return text if len(text) <= limit else text[: limit - 3] + "..."
