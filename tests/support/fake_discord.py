"""A local fake Discord (gateway websocket + REST) that the real discord.py client connects to in tests.

Usage::

    async with FakeDiscord() as fake:                 # starts the server and patches discord.py's URLs
        bot = commands.Bot(commands.when_mentioned, intents=discord.Intents.default(), guild_ready_timeout=0.05)
        async with fake.connected(bot):               # bot.start(fake.token) ... bot.close()
            inter = await fake.slash("imagine", {"prompt": "a cat"})
            cb = await inter.wait_response()

Client notes (checked against discord.py 2.7.1):
- Pass ``guild_ready_timeout=0.05`` (or so): the client fires ``on_ready`` that long after the last GUILD_CREATE
  (default 2 s). The guild cache is filled either way; ``fake.wait_ready()`` proves it.
- ``Intents.default()`` is enough; with the members intent GUILD_CREATE lists every configured member, so the
  guild counts as chunked and no REQUEST_MEMBERS round is needed (op 8 is answered anyway).
- A fresh IDENTIFY after the first one makes the client sleep 5 s in ``before_identify_hook``: prefer RESUME
  (``fake.reconnect_client()``), or override the hook.
- REST 500/502/504/524 are retried by discord.py with 1 s, 3 s, ... sleeps: inject 4xx or 503 instead.
- Close the client before the fake (``connected()`` does), and only after ``on_ready`` has fired, or its
  pending ready task is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import mimetypes
import re
import secrets
import socket
import struct
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import EllipsisType
from typing import Any, NamedTuple, TypeVar, cast

import aiohttp
import discord
import discord.gateway
import discord.http
import yarl
from aiohttp import web
from PIL import Image, UnidentifiedImageError

__all__ = [
    "APPLICATION_ID",
    "CHANNEL_ID",
    "GUILD_ID",
    "OWNER_ID",
    "USER_ID",
    "FakeCallback",
    "FakeChannel",
    "FakeDiscord",
    "FakeFailure",
    "FakeFile",
    "FakeGuild",
    "FakeInteraction",
    "FakeMember",
    "FakeMessage",
    "FakeRequest",
    "FakeRole",
    "FakeTeam",
    "FakeTeamMember",
    "FakeUser",
    "NotOffered",
    "StoredAttachment",
]

T = TypeVar("T")
_Handler = Callable[..., Awaitable[web.StreamResponse]]

# Fixed, snowflake-sized ids so tests can name them without plumbing.
APPLICATION_ID = 1_100_000_000_000_000_001  # also the bot user's id, as for every modern bot
GUILD_ID = 1_100_000_000_000_000_100
CHANNEL_ID = 1_100_000_000_000_000_200
USER_ID = 1_100_000_000_000_000_300
OWNER_ID = 1_100_000_000_000_000_301

DISCORD_EPOCH_MS = 1_420_070_400_000
_EPOCH = "2015-01-01T00:00:00+00:00"
API_PREFIX = "/api/v10"
JSON_HEADERS = {"Content-Type": "application/json"}  # exact: discord.py compares the whole header

EPHEMERAL = 1 << 6
LOADING = 1 << 7
SUPPRESS_EMBEDS = 1 << 2
COMPONENTS_V2 = 1 << 15
GUILD_MESSAGES_INTENT = 1 << 9
DIRECT_MESSAGES_INTENT = 1 << 12

# Per-file upload limit by boost tier (discord.py's Guild._PREMIUM_GUILD_LIMITS).
_FILESIZE_BY_TIER = {0: 10 * 1024 * 1024, 1: 10 * 1024 * 1024, 2: 50 * 1024 * 1024, 3: 100 * 1024 * 1024}
DM_FILESIZE_LIMIT = 10 * 1024 * 1024

DEFAULT_EVERYONE_PERMISSIONS = discord.Permissions(
    view_channel=True,
    send_messages=True,
    send_messages_in_threads=True,
    embed_links=True,
    attach_files=True,
    read_message_history=True,
    add_reactions=True,
    use_external_emojis=True,
    use_application_commands=True,
).value
DEFAULT_BOT_PERMISSIONS = DEFAULT_EVERYONE_PERMISSIONS | discord.Permissions(manage_messages=True).value
ALL_PERMISSIONS = discord.Permissions.all().value

_ERROR_MESSAGES = {
    0: "General error",
    10003: "Unknown Channel",
    10008: "Unknown Message",
    10015: "Unknown Webhook",
    10062: "Unknown interaction",
    30046: "Maximum number of edits to messages older than 1 hour reached. Try again later.",
    40005: "Request entity too large",
    40060: "Interaction has already been acknowledged.",
    50006: "Cannot send an empty message",
    50013: "Missing Permissions",
    50027: "Invalid Webhook Token",
    50035: "Invalid Form Body",
}


# --------------------------------------------------------------------------- configuration


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
            metadata = {"archived": False, "auto_archive_duration": 1440, "archive_timestamp": _EPOCH, "locked": False}
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
        return _FILESIZE_BY_TIER[self.premium_tier]

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


# --------------------------------------------------------------------------- recorded state


@dataclass(frozen=True)
class FakeRequest:
    """One HTTP request the fake received."""

    method: str
    path: str  # relative to /api/v10 (CDN paths start with /attachments/)
    query: Mapping[str, str]
    json: Any  # the JSON body, or the multipart payload_json; None when there is none
    files: tuple[str, ...]  # filenames of multipart file parts
    time: float  # loop time on arrival
    status: int


class FakeCallback(NamedTuple):
    """One interaction callback: (type, data, received_at)."""

    type: int
    data: dict[str, Any] | None
    received_at: float


@dataclass
class StoredAttachment:
    """An attachment the fake holds, bytes included."""

    id: int
    filename: str
    content_type: str
    data: bytes
    url: str
    description: str | None = None
    ephemeral: bool = False

    @property
    def size(self) -> int:
        """Size in bytes."""
        return len(self.data)

    def payload(self) -> dict[str, Any]:
        """The attachment object as the API sends it."""
        data: dict[str, Any] = {
            "id": str(self.id),
            "filename": self.filename,
            "size": self.size,
            "url": self.url,
            "proxy_url": self.url,
            "content_type": self.content_type,
        }
        if self.description is not None:
            data["description"] = self.description
        if self.ephemeral:
            data["ephemeral"] = True
        dims = _image_size(self.data, self.content_type)
        if dims is not None:
            data["width"], data["height"] = dims
        return data


@dataclass
class FakeMessage:
    """A message as the fake stores it; ``history`` holds the payloads before each edit."""

    id: int
    channel_id: int
    guild_id: int | None
    author: dict[str, Any]
    content: str
    embeds: list[dict[str, Any]]
    attachments: list[StoredAttachment]
    components: list[dict[str, Any]]
    flags: int
    created_via: str  # "interaction" | "webhook" | "channel" | "user"
    type: int = 0
    reference: dict[str, Any] | None = None
    interaction_id: int | None = None
    webhook_id: int | None = None
    tts: bool = False
    allowed_mentions: dict[str, Any] | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    edited_at: datetime | None = None
    deleted: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    interaction_metadata: dict[str, Any] | None = None
    nonce: str | None = None
    reactions: dict[str, int] = field(default_factory=dict)  # emoji → count (set by ``FakeDiscord.react``)

    @property
    def author_id(self) -> int:
        """Id of the author."""
        return int(self.author["id"])

    @property
    def ephemeral(self) -> bool:
        """Whether only the invoking user sees it."""
        return bool(self.flags & EPHEMERAL)

    @property
    def loading(self) -> bool:
        """Whether it is still a deferred "thinking..." message."""
        return bool(self.flags & LOADING)

    @property
    def edits(self) -> int:
        """How many times it was edited."""
        return len(self.history)

    def custom_ids(self) -> list[str]:
        """Every custom_id among its components, in order."""
        return [c["custom_id"] for c in _walk_components(self.components) if "custom_id" in c]

    def payload(self) -> dict[str, Any]:
        """The message object as the API returns it."""
        data: dict[str, Any] = {
            "id": str(self.id),
            "channel_id": str(self.channel_id),
            "author": self.author,
            "content": self.content,
            "timestamp": self.created_at.isoformat(),
            "edited_timestamp": None if self.edited_at is None else self.edited_at.isoformat(),
            "tts": self.tts,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [a.payload() for a in self.attachments],
            "embeds": self.embeds,
            "pinned": False,
            "type": self.type,
            "flags": self.flags,
            "components": self.components,
        }
        if self.webhook_id is not None:
            data["webhook_id"] = str(self.webhook_id)
            data["application_id"] = str(self.webhook_id)
        if self.reference is not None:
            data["message_reference"] = self.reference
        if self.interaction_metadata is not None:
            data["interaction_metadata"] = self.interaction_metadata
        if self.nonce is not None:
            data["nonce"] = self.nonce
        if self.reactions:
            data["reactions"] = [
                {"emoji": {"id": None, "name": emoji}, "count": count, "me": False, "burst_count": 0}
                for emoji, count in self.reactions.items()
            ]
        return data


@dataclass
class FakeInteraction:
    """An interaction the fake dispatched, and what the bot did with it."""

    id: int
    token: str
    type: int
    payload: dict[str, Any]
    sent_at: float
    callbacks: list[FakeCallback] = field(default_factory=list)
    original_message_id: int | None = None
    followup_ids: list[int] = field(default_factory=list)
    expired: bool = False
    _fake: FakeDiscord | None = field(default=None, repr=False, compare=False)

    @property
    def user_id(self) -> int:
        """Id of the user who triggered it."""
        user = self.payload["member"]["user"] if "member" in self.payload else self.payload["user"]
        return int(user["id"])

    @property
    def response(self) -> FakeCallback | None:
        """The (first and only allowed) callback, if any."""
        return self.callbacks[0] if self.callbacks else None

    @property
    def deferred(self) -> bool:
        """Whether the bot answered with a deferral (type 5 or 6)."""
        return self.response is not None and self.response.type in (5, 6)

    @property
    def ephemeral(self) -> bool:
        """Whether the response was flagged ephemeral."""
        cb = self.response
        return cb is not None and bool(((cb.data or {}).get("flags") or 0) & EPHEMERAL)

    @property
    def response_time(self) -> float | None:
        """Seconds between dispatch and callback."""
        return None if self.response is None else self.response.received_at - self.sent_at

    @property
    def original(self) -> FakeMessage | None:
        """The "original response" message, if one exists."""
        if self._fake is None or self.original_message_id is None:
            return None
        return self._fake.message(self.original_message_id)

    @property
    def followups(self) -> list[FakeMessage]:
        """Followup messages, in order."""
        assert self._fake is not None
        return [m for i in self.followup_ids if (m := self._fake.message(i)) is not None]

    async def wait_response(self, timeout: float = 10.0) -> FakeCallback:
        """Wait until the bot answers the interaction callback."""
        assert self._fake is not None
        return await self._fake.wait_for(lambda: self.response, timeout=timeout, what=f"a callback to {self.id}")

    async def wait_original(
        self, predicate: Callable[[FakeMessage], Any] = lambda m: True, timeout: float = 10.0
    ) -> FakeMessage:
        """Wait until the original response exists and satisfies ``predicate``."""
        assert self._fake is not None

        def check() -> FakeMessage | None:
            msg = self.original
            return msg if msg is not None and predicate(msg) else None

        return await self._fake.wait_for(check, timeout=timeout, what=f"the original response of {self.id}")


@dataclass
class FakeFailure:
    """An injected error for the next ``times`` matching requests."""

    method: str
    path_regex: re.Pattern[str]
    status: int
    code: int
    message: str
    times: int
    retry_after: float
    is_global: bool
    hits: int = 0

    @property
    def remaining(self) -> int:
        """How many more requests it will fail."""
        return self.times - self.hits


class _ApiError(Exception):
    """An error answer with Discord's JSON shape."""

    def __init__(self, status: int, code: int, message: str | None = None, errors: dict[str, Any] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message or _ERROR_MESSAGES.get(code, f"{status}: error")
        self.errors = errors

    def response(self) -> web.Response:
        body: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.errors:
            body["errors"] = self.errors
        return _json_response(body, status=self.status)


class NotOffered(AssertionError):
    """Discord does not offer this command where the test tried to use it (its contexts exclude the place)."""


class _Unhandled(_ApiError):
    """No route matches: answered 404 and recorded in ``fake.unhandled``."""


def _form_error(path: str, message: str, code: str = "BASE_TYPE_INVALID") -> _ApiError:
    """A 400/50035 "Invalid Form Body" with one field error, as Discord nests them."""
    errors: dict[str, Any] = {"_errors": [{"code": code, "message": message}]}
    for part in reversed(path.split(".")):
        errors = {part: errors}
    return _ApiError(400, 50035, "Invalid Form Body", errors)


@dataclass
class _Session:
    id: str
    intents: int
    identify: dict[str, Any]
    seq: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    ready_sent: bool = False


@dataclass
class _Conn:
    ws: web.WebSocketResponse
    query: Mapping[str, str]
    live: bool = False  # identified or resumed: dispatches may flow
    last_heartbeat_seq: int | None = None
    heartbeats: int = 0


# --------------------------------------------------------------------------- the fake


class FakeDiscord:
    """A fake Discord API + gateway on 127.0.0.1, for the real discord.py client."""

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
        self._session: _Session | None = None
        self._conn: _Conn | None = None
        self._sockets: set[web.WebSocketResponse] = set()
        self._gateway_lock: asyncio.Lock | None = None
        self._changed: asyncio.Event | None = None
        self._last_snowflake = 0
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._routes = self._build_routes()

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Start serving on a free port of 127.0.0.1."""
        self._gateway_lock = asyncio.Lock()
        self._changed = asyncio.Event()
        app = web.Application(client_max_size=512 * 1024 * 1024)  # aiohttp's 1 MiB default is below Discord's
        app.router.add_route("GET", "/gateway", self._gateway_handler)
        app.router.add_route("*", "/{tail:.*}", self._http_handler)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        # Bind first so the free port is known without reaching into aiohttp's site internals.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

    async def close(self) -> None:
        """Close gateway sockets and stop the server."""
        for ws in list(self._sockets):
            with contextlib.suppress(Exception):
                await ws.close(code=1001, message=b"fake discord shutting down")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        self._patch_stack = contextlib.ExitStack()
        self._patch_stack.enter_context(self.patched())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._patch_stack.close()
        await self.close()

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

    @contextlib.contextmanager
    def patched(self) -> Iterator[FakeDiscord]:
        """Point discord.py's REST base and gateway URL at this fake, restoring them after."""
        route, ws_cls = discord.http.Route, discord.gateway.DiscordWebSocket
        old_base, old_gateway = route.BASE, ws_cls.DEFAULT_GATEWAY
        route.BASE = self.base_url
        ws_cls.DEFAULT_GATEWAY = yarl.URL(self.gateway_url)
        try:
            yield self
        finally:
            route.BASE = old_base
            ws_cls.DEFAULT_GATEWAY = old_gateway

    @contextlib.asynccontextmanager
    async def connected(self, client: discord.Client, *, timeout: float = 10.0) -> AsyncIterator[discord.Client]:
        """Run ``client.start(token)`` until it is ready; on exit close it and surface its errors."""
        task = asyncio.create_task(client.start(self.token), name="fake-discord-client")
        try:
            await self._race(self.wait_ready(timeout=timeout), task, timeout, "the client to identify")
            await self._race(client.wait_until_ready(), task, timeout, "the client's on_ready")
            yield client
        except BaseException:
            await self._stop_client(client, task, timeout, surface=False)
            raise
        await self._stop_client(client, task, timeout, surface=True)

    async def _race(self, aw: Awaitable[Any], task: asyncio.Task[None], timeout: float, what: str) -> None:
        waiter = asyncio.ensure_future(aw)
        done, _ = await asyncio.wait({waiter, task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if waiter in done:
            waiter.result()
            return
        waiter.cancel()
        with contextlib.suppress(BaseException):
            await waiter
        if task in done:
            exc = None if task.cancelled() else task.exception()
            raise AssertionError(f"client stopped while waiting for {what}: {exc!r}\n{self.summary()}") from exc
        raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{self.summary()}")

    @staticmethod
    async def _stop_client(client: discord.Client, task: asyncio.Task[None], timeout: float, surface: bool) -> None:
        await client.close()
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            if surface:
                raise AssertionError("client task did not finish after close()")
            return
        exc = None if task.cancelled() else task.exception()
        if exc is not None and surface:
            raise exc

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

    async def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait until the client identified, got READY and every GUILD_CREATE, and processed them."""
        await self.wait_for(
            lambda: (
                self._session is not None and self._session.ready_sent and self._conn is not None and self._conn.live
            ),
            timeout=timeout,
            what="IDENTIFY, READY and GUILD_CREATE",
        )
        await self.roundtrip(timeout=timeout)

    async def roundtrip(self, timeout: float = 10.0) -> None:
        """Wait until the client has processed every gateway event sent so far."""
        # The client answers a server op 1 with a heartbeat carrying the last sequence it processed, and it
        # parses each dispatch synchronously after storing its sequence, so d >= target proves it is handled.
        session, conn = self._session, self._conn
        assert session is not None and conn is not None, "the client is not connected"
        target = session.seq
        if conn.last_heartbeat_seq is None or conn.last_heartbeat_seq < target:
            await self._send(conn, {"op": 1, "d": None, "s": None, "t": None})
        await self.wait_for(
            lambda: conn.last_heartbeat_seq is not None and conn.last_heartbeat_seq >= target,
            timeout=timeout,
            what=f"a heartbeat acknowledging sequence {target}",
        )

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

    # ----------------------------------------------------------------- error injection

    def fail_next(
        self,
        method: str,
        path_regex: str,
        status: int,
        code: int = 0,
        message: str | None = None,
        *,
        times: int = 1,
        retry_after: float = 0.01,
        is_global: bool = False,
    ) -> FakeFailure:
        """Answer the next ``times`` requests matching ``method`` ("*": any) and ``path_regex`` with an error."""
        if message is None:
            message = "You are being rate limited." if status == 429 else _ERROR_MESSAGES.get(code, f"{status}: error")
        failure = FakeFailure(
            method=method.upper(),
            path_regex=re.compile(path_regex),
            status=status,
            code=code,
            message=message,
            times=times,
            retry_after=retry_after,
            is_global=is_global,
        )
        self.failures.append(failure)
        return failure

    def _take_failure(self, method: str, path: str) -> FakeFailure | None:
        for failure in self.failures:
            if failure.remaining > 0 and failure.method in (method, "*") and failure.path_regex.search(path):
                failure.hits += 1
                return failure
        return None

    @staticmethod
    def _failure_response(failure: FakeFailure) -> web.Response:
        body: dict[str, Any] = {"message": failure.message, "code": failure.code}
        headers = dict(JSON_HEADERS)
        if failure.status == 429:
            # discord.py only honours a 429 that carries a Via header (else it blames Cloudflare and raises).
            body.update(retry_after=failure.retry_after, **{"global": failure.is_global})
            headers.update(
                {
                    "Via": "1.1 google",
                    "Retry-After": str(max(1, int(failure.retry_after + 0.999))),
                    "X-RateLimit-Limit": "5",
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": f"{time.time() + failure.retry_after:.3f}",
                    "X-RateLimit-Reset-After": f"{failure.retry_after:.3f}",
                    "X-RateLimit-Scope": "global" if failure.is_global else "user",
                }
            )
            if failure.is_global:
                headers["X-RateLimit-Global"] = "true"
        return web.Response(body=json.dumps(body).encode(), status=failure.status, headers=headers)

    # ----------------------------------------------------------------- gateway

    async def _gateway_handler(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        conn = _Conn(ws=ws, query=dict(request.query))
        self._sockets.add(ws)
        self._conn = conn
        try:
            await self._send(
                conn, {"op": 10, "d": {"heartbeat_interval": self.heartbeat_interval_ms}, "s": None, "t": None}
            )
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    try:
                        await self._on_gateway_message(conn, json.loads(msg.data))
                    except Exception as exc:  # a fake bug must show up in the test, not vanish in aiohttp
                        self.internal_errors.append(exc)
                        raise
                elif msg.type is aiohttp.WSMsgType.BINARY:
                    self.internal_errors.append(AssertionError("client sent a binary gateway frame"))
        finally:
            conn.live = False
            self._sockets.discard(ws)
            if self._conn is conn:
                self._conn = None
            self._notify()
        return ws

    async def _send(self, conn: _Conn, frame: dict[str, Any]) -> None:
        assert self._gateway_lock is not None
        async with self._gateway_lock:
            await conn.ws.send_str(json.dumps(frame))  # text frames: discord.py only inflates bytes

    async def _on_gateway_message(self, conn: _Conn, frame: dict[str, Any]) -> None:
        self.gateway_received.append(frame)
        op, d = frame.get("op"), cast(Any, frame.get("d"))
        if op == 1:  # heartbeat
            conn.last_heartbeat_seq = d
            conn.heartbeats += 1
            await self._send(conn, {"op": 11, "d": None, "s": None, "t": None})
        elif op == 2:
            await self._identify(conn, d)
        elif op == 6:
            await self._resume(conn, d)
        elif op == 8:
            await self._request_members(d)
        # op 3 (presence) and 4 (voice state) are recorded only.
        self._notify()

    async def _identify(self, conn: _Conn, d: dict[str, Any]) -> None:
        if d.get("token") != self.token:
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return
        session = _Session(id=secrets.token_hex(16), intents=int(d.get("intents") or 0), identify=d)
        self._session = session
        self.identifies += 1
        conn.live = True
        ready = {
            "v": 10,
            "user": {**self.bot_user.payload(), "verified": True, "mfa_enabled": False, "flags": 0, "email": None},
            "guilds": [{"id": str(g.id), "unavailable": True} for g in self.guilds],
            "session_id": session.id,
            "session_type": "normal",
            "resume_gateway_url": self.gateway_url,
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": [],
            "application": {"id": str(self.application_id), "flags": 0},
            "_trace": ["fake-discord"],
        }
        if "shard" in d:
            ready["shard"] = d["shard"]
        await self._dispatch("READY", ready)
        for guild in self.guilds:
            await self._dispatch("GUILD_CREATE", self._guild_payload(guild))
        session.ready_sent = True

    async def _resume(self, conn: _Conn, d: dict[str, Any]) -> None:
        session = self._session
        if session is None or d.get("session_id") != session.id or d.get("token") != self.token:
            await self._send(conn, {"op": 9, "d": False, "s": None, "t": None})
            return
        assert self._gateway_lock is not None
        async with self._gateway_lock:
            # Replay what the client missed, then RESUMED, with nothing interleaved.
            for frame in session.events:
                if frame["s"] > (d.get("seq") or 0):
                    await conn.ws.send_str(json.dumps(frame))
            conn.live = True
            self._conn = conn
            await self._dispatch_locked("RESUMED", {"_trace": ["fake-discord"]})
        self.resumes += 1

    async def _request_members(self, d: dict[str, Any]) -> None:
        guild = self.guild(int(d["guild_id"]))
        members = [self._member_payload(guild, m.user.id) for m in self._guild_members(guild)]
        query, limit = d.get("query") or "", d.get("limit") or 0
        members = [m for m in members if m["user"]["username"].startswith(query)]
        if limit:
            members = members[:limit]
        chunk = {"guild_id": str(guild.id), "members": members, "chunk_index": 0, "chunk_count": 1, "not_found": []}
        if d.get("nonce") is not None:
            chunk["nonce"] = d["nonce"]
        await self._dispatch("GUILD_MEMBERS_CHUNK", chunk)

    async def _dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send a DISPATCH with the next sequence number (kept for RESUME replay)."""
        assert self._gateway_lock is not None
        async with self._gateway_lock:
            await self._dispatch_locked(event, data)
        self._notify()

    async def _dispatch_locked(self, event: str, data: dict[str, Any]) -> None:
        session = self._session
        if session is None:
            raise AssertionError(f"cannot dispatch {event}: the client has not identified")
        session.seq += 1
        frame = {"op": 0, "t": event, "s": session.seq, "d": data}
        session.events.append(frame)
        conn = self._conn
        if conn is not None and conn.live and not conn.ws.closed:
            with contextlib.suppress(ConnectionResetError):  # replayed on RESUME
                await conn.ws.send_str(json.dumps(frame))

    async def dispatch_event(self, event: str, data: dict[str, Any]) -> None:
        """Send an arbitrary gateway DISPATCH event to the client."""
        await self.wait_for(lambda: self._session is not None and self._session.ready_sent, what="READY")
        await self._dispatch(event, data)

    async def reconnect_client(self, timeout: float = 10.0) -> None:
        """Send op 7 RECONNECT and wait until the client has resumed on a new socket."""
        conn = self._conn
        assert conn is not None and conn.live, "the client is not connected"
        before = self.resumes
        await self._send(conn, {"op": 7, "d": None, "s": None, "t": None})
        await self.wait_for(lambda: self.resumes > before, timeout=timeout, what="RESUME after op 7")

    def _guild_members(self, guild: FakeGuild) -> list[FakeMember]:
        bot_member = FakeMember(user=self.bot_user, roles=(guild.bot_role_id,))
        return [bot_member, *(m for m in guild.members if m.user.id != self.bot_user.id)]

    def _guild_payload(self, guild: FakeGuild) -> dict[str, Any]:
        members = [self._member_payload(guild, m.user.id) for m in self._guild_members(guild)]
        return {
            "id": str(guild.id),
            "name": guild.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(guild.owner_id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": guild.premium_tier,
            "premium_subscription_count": 0,
            "premium_progress_bar_enabled": False,
            "preferred_locale": guild.preferred_locale,
            "features": list(guild.features),
            "roles": [r.payload() for r in guild.all_roles()],
            "emojis": [],
            "stickers": [],
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "vanity_url_code": None,
            "application_id": None,
            "joined_at": datetime.now(timezone.utc).isoformat(),
            "large": False,
            "unavailable": False,
            # member_count == len(members) makes discord.py consider the guild chunked: no REQUEST_MEMBERS wait.
            "member_count": len(members),
            "members": members,
            "channels": [c.payload(None) for c in guild.channels],
            "threads": [],
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }

    def _user(self, user_id: int) -> FakeUser:
        return self.users.get(user_id) or FakeUser(id=user_id, username=f"user{user_id}")

    def _member_roles(self, guild: FakeGuild, user_id: int) -> list[int]:
        if user_id == self.bot_user.id:
            return [guild.bot_role_id]
        member = next((m for m in guild.members if m.user.id == user_id), None)
        return list(member.roles) if member else []

    def _member_payload(self, guild: FakeGuild, user_id: int, permissions: int | None = None) -> dict[str, Any]:
        member = next((m for m in guild.members if m.user.id == user_id), None)
        data: dict[str, Any] = {
            "user": self._user(user_id).payload(),
            "roles": [str(r) for r in self._member_roles(guild, user_id)],
            "nick": member.nick if member else None,
            "avatar": None,
            "banner": None,
            "joined_at": datetime(2024, 1, 1, tzinfo=timezone.utc).isoformat(),
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "communication_disabled_until": None,
        }
        if permissions is not None:
            data["permissions"] = str(permissions)
        return data

    # ----------------------------------------------------------------- interactions

    def _snowflake(self) -> int:
        value = (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22
        self._last_snowflake = max(value, self._last_snowflake + 1)
        return self._last_snowflake

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

    def interaction_payload(
        self,
        type: int,
        *,
        user_id: int = USER_ID,
        guild_id: int | None | EllipsisType = ...,
        channel_id: int | None = None,
        app_permissions: int | None = None,
        member_permissions: int | None = None,
        locale: str = "en-US",
    ) -> dict[str, Any]:
        """An INTERACTION_CREATE payload without ``data``: who, where, permissions (``guild_id=None``: a DM)."""
        if isinstance(guild_id, EllipsisType):
            guild_id = self.guilds[0].id
        payload: dict[str, Any] = {
            "id": str(self._snowflake()),
            "application_id": str(self.application_id),
            "type": type,
            "token": "itok-" + secrets.token_urlsafe(24),
            "version": 1,
            "locale": locale,
            "entitlements": [],
        }
        if guild_id is not None:
            guild = self.guild(guild_id)
            channel_id = channel_id if channel_id is not None else guild.channels[0].id
            channel, _ = self._channel_payload(channel_id)
            roles = self._member_roles(guild, user_id)
            if member_permissions is None:
                member_permissions = guild.permissions_of(user_id, roles)
            if app_permissions is None:
                app_permissions = guild.permissions_of(self.bot_user.id, [guild.bot_role_id])
            payload.update(
                guild_id=str(guild.id),
                guild={"id": str(guild.id), "locale": guild.preferred_locale, "features": list(guild.features)},
                guild_locale=guild.preferred_locale,
                member=self._member_payload(guild, user_id, member_permissions),
                context=0,
                authorizing_integration_owners={"0": str(guild.id)},
                attachment_size_limit=guild.filesize_limit,
            )
        else:
            channel_id = channel_id if channel_id is not None else self.dm_channel_id(user_id)
            channel, _ = self._channel_payload(channel_id)
            if app_permissions is None:
                app_permissions = DEFAULT_BOT_PERMISSIONS
            payload.update(
                user=self._user(user_id).payload(),
                context=1,
                authorizing_integration_owners={"1": str(user_id)},
                attachment_size_limit=DM_FILESIZE_LIMIT,
            )
        payload.update(channel_id=str(channel_id), channel=channel, app_permissions=str(app_permissions))
        return payload

    async def dispatch_interaction(self, payload: dict[str, Any]) -> FakeInteraction:
        """Send an INTERACTION_CREATE (see ``interaction_payload``), filling in id and token; returns its record."""
        await self.wait_for(lambda: self._session is not None and self._session.ready_sent, what="READY")
        payload.setdefault("id", str(self._snowflake()))
        payload.setdefault("token", "itok-" + secrets.token_urlsafe(24))
        payload.setdefault("application_id", str(self.application_id))
        payload.setdefault("version", 1)
        payload.setdefault("attachment_size_limit", DM_FILESIZE_LIMIT)  # discord.py reads it unconditionally
        loop = asyncio.get_running_loop()
        inter = FakeInteraction(
            id=int(payload["id"]),
            token=payload["token"],
            type=int(payload["type"]),
            payload=payload,
            sent_at=loop.time(),
            _fake=self,
        )
        if inter.type in (3, 5) and "message" in payload:
            # Deferred updates and UPDATE_MESSAGE address the message the component (or modal's button) is on.
            inter.original_message_id = int(payload["message"]["id"])
        self.interactions.append(inter)
        self._interactions_by_id[inter.id] = inter
        self._interactions_by_token[inter.token] = inter
        await self._dispatch("INTERACTION_CREATE", payload)
        return inter

    async def slash(
        self,
        name: str,
        options: Mapping[str, Any] | None = None,
        *,
        subcommand: str | None = None,
        user_id: int = USER_ID,
        guild_id: int | None | EllipsisType = ...,
        channel_id: int | None = None,
        app_permissions: int | None = None,
        member_permissions: int | None = None,
        locale: str = "en-US",
        validate: bool = True,
        attachment_size_limit: int | None = None,
    ) -> FakeInteraction:
        """Invoke a synced chat-input command like a user would; ``guild_id=None`` means a DM."""
        payload = self.interaction_payload(
            2,
            user_id=user_id,
            guild_id=guild_id,
            channel_id=channel_id,
            app_permissions=app_permissions,
            member_permissions=member_permissions,
            locale=locale,
        )
        payload["data"] = self._command_data(payload, name, options or {}, subcommand, None, validate)
        if attachment_size_limit is not None:
            payload["attachment_size_limit"] = attachment_size_limit
        return await self.dispatch_interaction(payload)

    async def autocomplete(
        self,
        name: str,
        options: Mapping[str, Any],
        focused: str,
        *,
        subcommand: str | None = None,
        user_id: int = USER_ID,
        guild_id: int | None | EllipsisType = ...,
        channel_id: int | None = None,
        locale: str = "en-US",
    ) -> FakeInteraction:
        """Send an autocomplete interaction (type 4) with ``focused`` as the focused option."""
        payload = self.interaction_payload(4, user_id=user_id, guild_id=guild_id, channel_id=channel_id, locale=locale)
        payload["data"] = self._command_data(payload, name, options, subcommand, focused, validate=False)
        return await self.dispatch_interaction(payload)

    def _command_data(
        self,
        payload: dict[str, Any],
        name: str,
        options: Mapping[str, Any],
        subcommand: str | None,
        focused: str | None,
        validate: bool,
    ) -> dict[str, Any]:
        """The ``data`` of a command interaction, typed from the synced definition."""
        guild_id = int(payload["guild_id"]) if "guild_id" in payload else None
        command = self.command(name, guild_id)
        if command is None:
            synced = {scope: [c["name"] for c in cmds] for scope, cmds in self.commands.items()}
            raise AssertionError(f"/{name} is not synced for guild {guild_id}; synced: {synced}")
        _check_offered(command, payload)
        definitions: list[dict[str, Any]] = command.get("options", [])
        wrappers: list[dict[str, Any]] = []
        for part in subcommand.split() if subcommand else []:
            sub = next((o for o in definitions if o["name"] == part and o["type"] in (1, 2)), None)
            if sub is None:
                raise AssertionError(f"/{name} has no subcommand {part!r}")
            wrappers.append({"type": sub["type"], "name": part})
            definitions = sub.get("options", [])
        if any(o["type"] in (1, 2) for o in definitions):
            raise AssertionError(f"/{name} needs a subcommand: {[o['name'] for o in definitions]}")
        resolved: dict[str, dict[str, Any]] = {}
        built = self._build_options(name, definitions, options, focused, resolved, guild_id, validate)
        for wrapper in reversed(wrappers):
            wrapper["options"] = built
            built = [wrapper]
        data: dict[str, Any] = {"id": command["id"], "name": name, "type": command.get("type", 1), "options": built}
        if command.get("guild_id") is not None:
            data["guild_id"] = command["guild_id"]  # discord.py looks the command up in that guild's tree
        if resolved:
            data["resolved"] = resolved
        return data

    def _build_options(
        self,
        command: str,
        definitions: list[dict[str, Any]],
        values: Mapping[str, Any],
        focused: str | None,
        resolved: dict[str, dict[str, Any]],
        guild_id: int | None,
        validate: bool,
    ) -> list[dict[str, Any]]:
        by_name = {d["name"]: d for d in definitions}
        unknown = set(values) - set(by_name)
        if unknown:
            raise ValueError(f"/{command} has no option(s) {sorted(unknown)}; it has {sorted(by_name)}")
        missing = [d["name"] for d in definitions if d.get("required") and d["name"] not in values]
        if validate and missing:
            raise ValueError(f"/{command}: required option(s) {missing} missing")
        built = []
        for option_name, value in values.items():
            definition = by_name[option_name]
            kind = definition["type"]
            option: dict[str, Any] = {"name": option_name, "type": kind}
            if option_name == focused:
                option.update(value=str(value), focused=True)  # partial user input is always text
            else:
                option["value"] = self._option_value(command, definition, value, resolved, guild_id, validate)
            built.append(option)
        return built

    def _option_value(
        self,
        command: str,
        definition: dict[str, Any],
        value: Any,
        resolved: dict[str, dict[str, Any]],
        guild_id: int | None,
        validate: bool,
    ) -> Any:
        kind, label = definition["type"], f"/{command} {definition['name']}"
        if kind == 3:
            value = str(value)
            low, high = definition.get("min_length", 0), definition.get("max_length", 6000)
            if validate and not low <= len(value) <= high:
                raise ValueError(f"{label}: length {len(value)} outside {low}..{high}")
        elif kind == 4:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{label}: expected an int, got {value!r}")
        elif kind == 10:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{label}: expected a number, got {value!r}")
        elif kind == 5:
            if not isinstance(value, bool):
                raise ValueError(f"{label}: expected a bool, got {value!r}")
        elif kind in (6, 9) and not (kind == 9 and guild_id is not None and self._is_role(guild_id, int(value))):
            user_id = int(getattr(value, "id", value))
            resolved.setdefault("users", {})[str(user_id)] = self._user(user_id).payload()
            if guild_id is not None:
                member = self._member_payload(self.guild(guild_id), user_id)
                member.pop("user")
                resolved.setdefault("members", {})[str(user_id)] = member
            return str(user_id)
        elif kind in (8, 9):
            role = next(r for r in self.guild(guild_id).all_roles() if r.id == int(value))
            resolved.setdefault("roles", {})[str(role.id)] = role.payload()
            return str(role.id)
        elif kind == 7:
            channel, _ = self._channel_payload(int(getattr(value, "id", value)))
            resolved.setdefault("channels", {})[channel["id"]] = {**channel, "permissions": str(ALL_PERMISSIONS)}
            return channel["id"]
        elif kind == 11:
            if not isinstance(value, FakeFile):
                raise ValueError(f"{label}: pass a FakeFile for attachment options, got {type(value).__name__}")
            attachment = self._store_upload(value.filename, value.data, value.content_type, None, ephemeral=True)
            resolved.setdefault("attachments", {})[str(attachment.id)] = attachment.payload()
            return str(attachment.id)
        if validate and kind in (4, 10):
            low, high = definition.get("min_value"), definition.get("max_value")
            if (low is not None and value < low) or (high is not None and value > high):
                raise ValueError(f"{label}: {value} outside {low}..{high}")
        choices = definition.get("choices")
        if validate and choices and value not in [c["value"] for c in choices]:
            raise ValueError(f"{label}: {value!r} is not one of {[c['value'] for c in choices]}")
        return value

    def _is_role(self, guild_id: int, object_id: int) -> bool:
        return any(r.id == object_id for r in self.guild(guild_id).all_roles())

    async def press(
        self,
        message: FakeMessage | int,
        custom_id: str,
        *,
        user_id: int = USER_ID,
        values: Sequence[str] | None = None,
        locale: str = "en-US",
        member_permissions: int | None = None,
    ) -> FakeInteraction:
        """Click a button (or pick ``values`` in a select) on a message the bot sent."""
        msg = message if isinstance(message, FakeMessage) else self._messages.get(message)
        if msg is None or msg.deleted:
            raise AssertionError(f"message {message!r} does not exist (or was deleted)\n{self.summary()}")
        component = next((c for c in _walk_components(msg.components) if c.get("custom_id") == custom_id), None)
        if component is None:
            raise AssertionError(f"message {msg.id} has no component {custom_id!r}; it has {msg.custom_ids()}")
        if component.get("disabled"):
            raise AssertionError(f"component {custom_id!r} on message {msg.id} is disabled")
        payload = self.interaction_payload(
            3,
            user_id=user_id,
            guild_id=msg.guild_id,
            channel_id=msg.channel_id,
            app_permissions=None,
            member_permissions=member_permissions,
            locale=locale,
        )
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": component["type"]}
        if component["type"] != 2:
            data["values"] = list(values or [])
        payload.update(data=data, message=msg.payload())
        return await self.dispatch_interaction(payload)

    async def submit_modal(
        self, interaction: FakeInteraction, values: Mapping[str, str | Sequence[str]], *, user_id: int | None = None
    ) -> FakeInteraction:
        """Submit the modal the bot opened (callback type 9) on ``interaction`` with text/select ``values``."""
        modal = next((c.data for c in interaction.callbacks if c.type == 9), None)
        if modal is None:
            raise AssertionError(f"interaction {interaction.id} did not open a modal: {interaction.callbacks}")
        original = interaction.payload
        payload = self.interaction_payload(
            5,
            user_id=user_id if user_id is not None else interaction.user_id,
            guild_id=int(original["guild_id"]) if "guild_id" in original else None,
            channel_id=int(original["channel_id"]),
            app_permissions=None,
            member_permissions=None,
            locale=original.get("locale", "en-US"),
        )
        payload["data"] = {"custom_id": modal["custom_id"], "components": _modal_answers(modal["components"], values)}
        if "message" in original:
            payload["message"] = original["message"]
        return await self.dispatch_interaction(payload)

    async def context_menu(
        self,
        name: str,
        message: FakeMessage,
        *,
        user_id: int = USER_ID,
        member_permissions: int | None = None,
    ) -> FakeInteraction:
        """Pick a synced message command (type 3) from a message's Apps menu, the message resolved."""
        command = self.command(name, message.guild_id)
        if command is None or command.get("type") != 3:
            raise AssertionError(f"no message command {name!r} is synced: {self.commands}")
        payload = self.interaction_payload(
            2,
            user_id=user_id,
            guild_id=message.guild_id,
            channel_id=message.channel_id,
            member_permissions=member_permissions,
        )
        _check_offered(command, payload)
        data: dict[str, Any] = {
            "id": command["id"],
            "name": name,
            "type": 3,
            "target_id": str(message.id),
            "resolved": {"messages": {str(message.id): {**message.payload(), **_guild_field(message)}}},
        }
        if command.get("guild_id") is not None:
            data["guild_id"] = command["guild_id"]
        payload["data"] = data
        return await self.dispatch_interaction(payload)

    async def post_files_as_user(
        self, channel_id: int, files: Sequence[FakeFile], content: str = "", *, user_id: int = USER_ID
    ) -> FakeMessage:
        """A user posts a message with attachments (width and height reported for images, as Discord does)."""
        message = await self.post_as_user(channel_id, content, user_id=user_id)
        message.attachments = [
            self._store_upload(f.filename, f.data, f.content_type, None, ephemeral=False) for f in files
        ]
        return message

    def react(self, message: FakeMessage, emoji: str, count: int = 1) -> None:
        """Members add `count` reactions of `emoji` to a message (seen when the message is fetched)."""
        message.reactions[emoji] = message.reactions.get(emoji, 0) + count

    def expire(self, interaction: FakeInteraction) -> None:
        """Make the interaction's token expired (webhook calls answer 401/50027, callbacks 404/10062)."""
        interaction.expired = True

    async def post_as_user(self, channel_id: int, content: str, *, user_id: int = USER_ID) -> FakeMessage:
        """A user posts a message: stored and sent as MESSAGE_CREATE."""
        channel, guild = self._channel_payload(channel_id)
        msg = FakeMessage(
            id=self._snowflake(),
            channel_id=channel_id,
            guild_id=guild.id if guild else None,
            author=self._user(user_id).payload(),
            content=content,
            embeds=[],
            attachments=[],
            components=[],
            flags=0,
            created_via="user",
        )
        self._messages[msg.id] = msg
        await self._message_event("MESSAGE_CREATE", msg)
        self._notify()
        return msg

    # ----------------------------------------------------------------- HTTP plumbing

    def _build_routes(self) -> list[tuple[str, re.Pattern[str], _Handler]]:
        app, snow = r"(\d+)", r"(\d+)"
        token = r"([^/]+)"
        table: list[tuple[str, str, _Handler]] = [
            ("GET", r"/users/@me", self._get_me),
            ("POST", r"/users/@me/channels", self._create_dm),
            ("GET", r"/gateway", self._get_gateway),
            ("GET", r"/gateway/bot", self._get_gateway_bot),
            ("GET", r"/oauth2/applications/@me", self._get_application),
            ("GET", rf"/applications/{app}/commands", self._get_commands),
            ("PUT", rf"/applications/{app}/commands", self._put_commands),
            ("GET", rf"/applications/{app}/guilds/{snow}/commands", self._get_commands),
            ("PUT", rf"/applications/{app}/guilds/{snow}/commands", self._put_commands),
            ("POST", rf"/interactions/{snow}/{token}/callback", self._interaction_callback),
            ("POST", rf"/webhooks/{app}/{token}", self._execute_webhook),
            ("GET", rf"/webhooks/{app}/{token}/messages/(@original|\d+)", self._webhook_message),
            ("PATCH", rf"/webhooks/{app}/{token}/messages/(@original|\d+)", self._webhook_message),
            ("DELETE", rf"/webhooks/{app}/{token}/messages/(@original|\d+)", self._webhook_message),
            ("GET", rf"/channels/{snow}", self._get_channel),
            ("POST", rf"/channels/{snow}/typing", self._typing),
            ("GET", rf"/channels/{snow}/messages", self._channel_history),
            ("POST", rf"/channels/{snow}/messages", self._create_channel_message),
            ("GET", rf"/channels/{snow}/messages/{snow}", self._channel_message),
            ("PATCH", rf"/channels/{snow}/messages/{snow}", self._channel_message),
            ("DELETE", rf"/channels/{snow}/messages/{snow}", self._channel_message),
        ]
        return [(method, re.compile(pattern + r"\Z"), handler) for method, pattern, handler in table]

    async def _http_handler(self, request: web.Request) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        arrived = loop.time()
        raw_path = request.path
        path = raw_path[len(API_PREFIX) :] if raw_path.startswith(API_PREFIX + "/") else raw_path
        body, files = await _read_body(request)
        status, unhandled = 500, False
        try:
            response = await self._route(request, raw_path, path, body, files)
            status = response.status
            return response
        except _ApiError as err:
            unhandled = isinstance(err, _Unhandled)
            status = err.status
            return err.response()
        except Exception as exc:
            # 503: discord.py raises it at once (it retries 500 with multi-second sleeps).
            self.internal_errors.append(exc)
            status = 503
            return _json_response({"message": f"fake discord bug: {exc!r}", "code": 0}, status=503)
        finally:
            record = FakeRequest(
                method=request.method,
                path=path,
                query=dict(request.query),
                json=body,
                files=tuple(f[0] for f in files.values()),
                time=arrived,
                status=status,
            )
            self.requests.append(record)
            if unhandled:
                self.unhandled.append(record)
            self._notify()

    async def _route(
        self, request: web.Request, raw_path: str, path: str, body: Any, files: dict[int, tuple[str, bytes, str]]
    ) -> web.StreamResponse:
        if raw_path.startswith("/attachments/"):
            await self.downloads.wait()
            return self._serve_attachment(raw_path)
        failure = self._take_failure(request.method, path)
        if failure is not None:
            return self._failure_response(failure)
        for method, pattern, handler in self._routes:
            match = pattern.match(path)
            if match and method == request.method and raw_path.startswith(API_PREFIX):
                # Webhook and interaction endpoints authenticate by token in the URL, the rest by header.
                by_header = not path.startswith(("/interactions/", "/webhooks/"))
                if by_header and request.headers.get("Authorization") != f"Bot {self.token}":
                    raise _ApiError(401, 0, "401: Unauthorized")
                return await handler(request, *match.groups(), body=body, files=files)
        raise _Unhandled(404, 0, "404: Not Found")

    def _serve_attachment(self, raw_path: str) -> web.Response:
        parts = raw_path.split("/")
        attachment = self._attachments.get(int(parts[3])) if len(parts) >= 5 and parts[3].isdigit() else None
        if attachment is None:
            return web.Response(status=404, text="not found")
        return web.Response(body=attachment.data, headers={"Content-Type": attachment.content_type})

    # ----------------------------------------------------------------- REST: identity, commands

    async def _get_me(self, request: web.Request, **_: Any) -> web.Response:
        return _json_response({**self.bot_user.payload(), "verified": True, "mfa_enabled": False, "flags": 0})

    async def _get_gateway(self, request: web.Request, **_: Any) -> web.Response:
        return _json_response({"url": self.gateway_url})

    async def _get_gateway_bot(self, request: web.Request, **_: Any) -> web.Response:
        limit = {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1}
        return _json_response({"url": self.gateway_url, "shards": 1, "session_start_limit": limit})

    async def _get_application(self, request: web.Request, **_: Any) -> web.Response:
        # A team's application has a pseudo-user named after the team as its owner.
        owner = FakeUser(id=self.team.id, username=f"team{self.team.id}") if self.team else self.owner
        return _json_response(
            {
                "id": str(self.application_id),
                "name": self.bot_user.username,
                "icon": None,
                "description": "",
                "bot_public": False,
                "bot_require_code_grant": False,
                "owner": owner.payload(),
                "team": self.team.payload() if self.team else None,
                "verify_key": "0" * 64,
                "flags": 0,
                "bot": self.bot_user.payload(),
                "interactions_endpoint_url": None,  # a URL here would make discord.py warn that it gets no interactions
                "redirect_uris": [],
                "tags": [],
            }
        )

    async def _create_dm(self, request: web.Request, *, body: Any, **_: Any) -> web.Response:
        channel_id = self.dm_channel_id(int(body["recipient_id"]))
        return _json_response(self._channel_payload(channel_id)[0])

    def _check_app(self, app_id: str) -> None:
        if int(app_id) != self.application_id:
            raise _ApiError(403, 50001, "Missing Access")

    async def _get_commands(
        self, request: web.Request, app_id: str, guild_id: str | None = None, **_: Any
    ) -> web.Response:
        self._check_app(app_id)
        return _json_response(self.commands.get(None if guild_id is None else int(guild_id), []))

    async def _put_commands(
        self, request: web.Request, app_id: str, guild_id: str | None = None, *, body: Any, **_: Any
    ) -> web.Response:
        self._check_app(app_id)
        scope = None if guild_id is None else int(guild_id)
        if scope is not None:
            self.guild(scope)
        if not isinstance(body, list):
            raise _form_error("_", "Expected a list of commands")
        stored = []
        for index, cmd in enumerate(body):
            _validate_command(cmd, str(index))
            kind = cmd.get("type", 1)
            key = (scope, kind, cmd["name"])
            # Discord keeps a command's id across syncs while its name and type stay the same.
            command_id = self._command_ids.setdefault(key, self._snowflake())
            stored.append(
                {
                    "description": "",
                    "default_member_permissions": None,
                    "nsfw": False,
                    "options": [],
                    **cmd,
                    "id": str(command_id),
                    "application_id": str(self.application_id),
                    "type": kind,
                    "version": str(self._snowflake()),
                    **({"guild_id": str(scope)} if scope is not None else {}),
                }
            )
        self.commands[scope] = stored
        return _json_response(stored)

    # ----------------------------------------------------------------- REST: interactions & webhooks

    async def _interaction_callback(
        self, request: web.Request, interaction_id: str, token: str, *, body: Any, files: dict[int, Any], **_: Any
    ) -> web.Response:
        inter = self._interactions_by_id.get(int(interaction_id))
        loop = asyncio.get_running_loop()
        if inter is None or inter.token != token or inter.expired:
            raise _ApiError(404, 10062)
        if self.interaction_deadline is not None and loop.time() - inter.sent_at > self.interaction_deadline:
            raise _ApiError(404, 10062)  # Discord forgets an interaction not answered within 3 s
        if inter.callbacks:
            raise _ApiError(400, 40060)
        kind, data = int(body["type"]), body.get("data")
        message: FakeMessage | None = None
        if kind == 4:
            message = self._new_message(_inter_channel(inter), data or {}, files, "interaction", interaction=inter)
        elif kind == 5:
            flags = LOADING | ((data or {}).get("flags", 0) & EPHEMERAL)
            message = self._new_message(
                _inter_channel(inter), {"flags": flags}, {}, "interaction", interaction=inter, allow_empty=True
            )
        elif kind == 7:
            target = self._messages.get(inter.original_message_id or 0)
            if target is None:
                raise _ApiError(400, 50035, "Interaction callback type UPDATE_MESSAGE needs a component interaction")
            self._edit_message(target, data or {}, files)
            message = target
        if kind in (4, 5):
            assert message is not None
            inter.original_message_id = message.id
            self._messages[message.id] = message
            await self._message_event("MESSAGE_CREATE", message)
        elif kind == 7 and message is not None:
            await self._message_event("MESSAGE_UPDATE", message)
        inter.callbacks.append(FakeCallback(kind, data, loop.time()))
        if request.query.get("with_response") not in ("1", "true", "True"):
            return web.Response(status=204)
        ephemeral = message is not None and message.ephemeral
        response: dict[str, Any] = {
            "interaction": {
                "id": str(inter.id),
                "type": inter.type,
                "response_message_loading": kind == 5,
                "response_message_ephemeral": ephemeral,
            }
        }
        if message is not None:
            response["interaction"]["response_message_id"] = str(message.id)
        if kind != 1:
            resource: dict[str, Any] = {"type": kind}
            if kind in (4, 7) and message is not None:
                resource["message"] = message.payload()
            response["resource"] = resource
        return _json_response(response)

    def _webhook_interaction(self, app_id: str, token: str) -> FakeInteraction:
        inter = self._interactions_by_token.get(token)
        if int(app_id) != self.application_id or inter is None:
            raise _ApiError(404, 10015)
        if inter.expired:
            raise _ApiError(401, 50027)
        if not inter.callbacks:
            raise _ApiError(404, 10015)  # the webhook exists only once the interaction is acknowledged
        return inter

    async def _execute_webhook(
        self, request: web.Request, app_id: str, token: str, *, body: Any, files: dict[int, Any], **_: Any
    ) -> web.Response:
        inter = self._webhook_interaction(app_id, token)
        message = self._new_message(_inter_channel(inter), body or {}, files, "webhook", interaction=inter)
        self._messages[message.id] = message
        inter.followup_ids.append(message.id)
        await self._message_event("MESSAGE_CREATE", message)
        if request.query.get("wait") in ("1", "true", "True"):
            return _json_response(message.payload())
        return web.Response(status=204)

    async def _webhook_message(
        self,
        request: web.Request,
        app_id: str,
        token: str,
        which: str,
        *,
        body: Any,
        files: dict[int, Any],
        **_: Any,
    ) -> web.Response:
        inter = self._webhook_interaction(app_id, token)
        message_id = inter.original_message_id if which == "@original" else int(which)
        owned = {inter.original_message_id, *inter.followup_ids}
        message = self._messages.get(message_id or 0)
        if message is None or message.deleted or message_id not in owned:
            raise _ApiError(404, 10008)
        return await self._message_verb(request.method, message, body, files)

    # ----------------------------------------------------------------- REST: channels

    def _channel_or_404(self, channel_id: str) -> tuple[dict[str, Any], FakeGuild | None]:
        try:
            return self._channel_payload(int(channel_id))
        except AssertionError:
            raise _ApiError(404, 10003) from None

    async def _get_channel(self, request: web.Request, channel_id: str, **_: Any) -> web.Response:
        return _json_response(self._channel_or_404(channel_id)[0])

    async def _typing(self, request: web.Request, channel_id: str, **_: Any) -> web.Response:
        self._channel_or_404(channel_id)
        return web.Response(status=204)

    async def _channel_history(self, request: web.Request, channel_id: str, **_: Any) -> web.Response:
        self._channel_or_404(channel_id)
        limit = int(request.query.get("limit", 50))
        before, after = request.query.get("before"), request.query.get("after")
        found = [m for m in self.messages(int(channel_id)) if not m.deleted and not m.ephemeral]
        if before:
            found = [m for m in found if m.id < int(before)]
        if after:
            found = [m for m in found if m.id > int(after)][:limit]
        found = sorted(found, key=lambda m: m.id, reverse=True)[:limit]  # newest first, as Discord
        return _json_response([m.payload() for m in found])

    async def _create_channel_message(
        self, request: web.Request, channel_id: str, *, body: Any, files: dict[int, Any], **_: Any
    ) -> web.Response:
        self._channel_or_404(channel_id)
        body = dict(body or {})
        if (body.get("flags") or 0) & EPHEMERAL:
            raise _form_error("flags", "Ephemeral messages can only be sent as interaction responses")
        nonce = body.get("nonce")
        if nonce is not None and body.get("enforce_nonce"):
            # Discord answers a retried send with the message the first attempt created.
            for earlier in self.messages(int(channel_id)):
                if earlier.nonce == str(nonce) and earlier.author_id == self.bot_user.id:
                    return _json_response(earlier.payload())
        message = self._new_message(int(channel_id), body, files, "channel")
        self._messages[message.id] = message
        await self._message_event("MESSAGE_CREATE", message)
        return _json_response(message.payload())

    async def _channel_message(
        self, request: web.Request, channel_id: str, message_id: str, *, body: Any, files: dict[int, Any], **_: Any
    ) -> web.Response:
        self._channel_or_404(channel_id)
        message = self._messages.get(int(message_id))
        # Ephemeral messages are invisible to the channel endpoints: only the interaction webhook reaches them.
        if message is None or message.deleted or message.ephemeral or message.channel_id != int(channel_id):
            raise _ApiError(404, 10008)
        if request.method == "PATCH" and message.author_id != self.bot_user.id:
            raise _ApiError(403, 50005, "Cannot edit a message authored by another user")
        return await self._message_verb(request.method, message, body, files)

    async def _message_verb(self, method: str, message: FakeMessage, body: Any, files: dict[int, Any]) -> web.Response:
        if method == "GET":
            return _json_response(message.payload())
        if method == "DELETE":
            message.deleted = True
            if not message.ephemeral:
                await self._dispatch_if_intended(
                    message,
                    "MESSAGE_DELETE",
                    {"id": str(message.id), "channel_id": str(message.channel_id), **_guild_field(message)},
                )
            return web.Response(status=204)
        self._edit_message(message, body or {}, files)
        await self._message_event("MESSAGE_UPDATE", message)
        return _json_response(message.payload())

    # ----------------------------------------------------------------- message building

    def _new_message(
        self,
        channel_id: int,
        body: dict[str, Any],
        files: dict[int, tuple[str, bytes, str]],
        via: str,
        *,
        interaction: FakeInteraction | None = None,
        allow_empty: bool = False,
    ) -> FakeMessage:
        _, guild = self._channel_payload(channel_id)
        limit = guild.filesize_limit if guild else DM_FILESIZE_LIMIT
        flags = int(body.get("flags") or 0)
        ephemeral = bool(flags & EPHEMERAL)
        attachments = self._resolve_attachments(body, files, [], limit, ephemeral)
        embeds = _resolve_embeds(body.get("embeds") or [], attachments)
        content = body.get("content") or ""
        _validate_message(content, embeds, attachments, body.get("components") or [])
        if not (
            allow_empty
            or content
            or embeds
            or attachments
            or body.get("components")
            or body.get("sticker_ids")
            or body.get("poll")
        ):
            raise _ApiError(400, 50006)
        reference = body.get("message_reference")
        if reference is not None:
            reference = {"type": 0, "channel_id": str(channel_id), **reference}
            reference = {k: str(v) if k.endswith("_id") else v for k, v in reference.items()}
        msg_type = 0
        metadata = None
        webhook_id = None
        if interaction is not None:
            webhook_id = self.application_id
            user = (interaction.payload.get("member") or interaction.payload)["user"]
            metadata = {
                "id": str(interaction.id),
                "type": interaction.type,
                "user": user,
                "authorizing_integration_owners": interaction.payload.get("authorizing_integration_owners", {}),
            }
            if via == "interaction" and interaction.type == 2:
                msg_type = 20  # CHAT_INPUT_COMMAND
            elif via == "webhook" and interaction.original_message_id is not None:
                metadata["original_response_message_id"] = str(interaction.original_message_id)
        elif reference is not None:
            msg_type = 19  # REPLY
        return FakeMessage(
            id=self._snowflake(),
            channel_id=channel_id,
            guild_id=guild.id if guild else None,
            author=self.bot_user.payload(),
            content=content,
            embeds=embeds,
            attachments=attachments,
            components=list(body.get("components") or []),
            flags=flags & (EPHEMERAL | LOADING | SUPPRESS_EMBEDS | COMPONENTS_V2 | (1 << 12)),
            created_via=via,
            type=msg_type,
            reference=reference,
            interaction_id=interaction.id if interaction else None,
            webhook_id=webhook_id,
            tts=bool(body.get("tts")),
            allowed_mentions=body.get("allowed_mentions"),
            interaction_metadata=metadata,
            nonce=None if body.get("nonce") is None else str(body["nonce"]),
        )

    def _edit_message(
        self, message: FakeMessage, body: dict[str, Any], files: dict[int, tuple[str, bytes, str]]
    ) -> None:
        _, guild = self._channel_payload(message.channel_id)
        limit = guild.filesize_limit if guild else DM_FILESIZE_LIMIT
        attachments = message.attachments
        if "attachments" in body or files:
            attachments = self._resolve_attachments(body, files, message.attachments, limit, message.ephemeral)
        content = message.content if "content" not in body else (body["content"] or "")
        embeds = message.embeds if "embeds" not in body else _resolve_embeds(body["embeds"] or [], attachments)
        components = message.components if "components" not in body else list(body["components"] or [])
        _validate_message(content, embeds, attachments, components)
        message.history.append(message.payload())
        message.content, message.embeds, message.attachments, message.components = (
            content,
            embeds,
            attachments,
            components,
        )
        if "flags" in body and body["flags"] is not None:
            editable = SUPPRESS_EMBEDS | COMPONENTS_V2  # the only flags an edit may change
            message.flags = (message.flags & ~editable) | (int(body["flags"]) & editable)
        message.flags &= ~LOADING  # editing a deferred response turns it into a real message
        if "allowed_mentions" in body:
            message.allowed_mentions = body["allowed_mentions"]
        message.edited_at = datetime.now(timezone.utc)

    def _resolve_attachments(
        self,
        body: dict[str, Any],
        files: dict[int, tuple[str, bytes, str]],
        existing: list[StoredAttachment],
        limit: int,
        ephemeral: bool,
    ) -> list[StoredAttachment]:
        for filename, data, _ in files.values():
            if len(data) > limit:
                raise _ApiError(413, 40005, f"Request entity too large: {filename} is {len(data)} bytes > {limit}")
        keep = {a.id: a for a in existing}
        result: list[StoredAttachment] = []
        used: set[int] = set()
        specs = body.get("attachments")
        # In v10 the attachments array lists every attachment that should remain; new uploads are referenced
        # by their files[n] index, kept ones by id. Without it, uploads are added to what is there.
        for spec in specs if specs is not None else []:
            spec_id = int(spec["id"])
            if spec_id in keep:
                result.append(keep[spec_id])
            elif spec_id in files:
                filename, data, content_type = files[spec_id]
                result.append(
                    self._store_upload(
                        spec.get("filename") or filename,
                        data,
                        content_type,
                        spec.get("description"),
                        ephemeral=ephemeral,
                    )
                )
                used.add(spec_id)
            else:
                raise _form_error("attachments", f"Unknown attachment id {spec_id}")
        if specs is None:
            result = list(existing)
        for index in sorted(set(files) - used):
            filename, data, content_type = files[index]
            result.append(self._store_upload(filename, data, content_type, None, ephemeral=ephemeral))
        return result

    def _store_upload(
        self, filename: str, data: bytes, content_type: str | None, description: str | None, *, ephemeral: bool
    ) -> StoredAttachment:
        attachment_id = self._snowflake()
        guessed = mimetypes.guess_type(filename)[0]
        # discord.py labels every part application/octet-stream; Discord derives the type from the content.
        if guessed is None or (content_type and content_type != "application/octet-stream"):
            guessed = content_type or guessed or "application/octet-stream"
        attachment = StoredAttachment(
            id=attachment_id,
            filename=filename,
            content_type=guessed,
            data=data,
            url=f"{self.origin}/attachments/0/{attachment_id}/{urllib.parse.quote(filename)}",
            description=description,
            ephemeral=ephemeral,
        )
        self._attachments[attachment_id] = attachment
        return attachment

    async def _message_event(self, event: str, message: FakeMessage) -> None:
        if message.ephemeral:
            return  # ephemeral messages never reach the gateway
        await self._dispatch_if_intended(message, event, {**message.payload(), **_guild_field(message)})

    async def _dispatch_if_intended(self, message: FakeMessage, event: str, data: dict[str, Any]) -> None:
        session = self._session
        if not self.dispatch_message_events or session is None or not session.ready_sent:
            return
        needed = GUILD_MESSAGES_INTENT if message.guild_id is not None else DIRECT_MESSAGES_INTENT
        if session.intents & needed:
            await self._dispatch(event, data)


# --------------------------------------------------------------------------- helpers


def _inter_channel(inter: FakeInteraction) -> int:
    """The channel id an interaction happened in."""
    return int(inter.payload["channel_id"])


def _guild_field(message: FakeMessage) -> dict[str, str]:
    return {} if message.guild_id is None else {"guild_id": str(message.guild_id)}


def _json_response(data: Any, status: int = 200) -> web.Response:
    # Generous rate-limit headers let discord.py's buckets run requests concurrently without sleeping.
    headers = {
        **JSON_HEADERS,
        "X-RateLimit-Limit": "50",
        "X-RateLimit-Remaining": "49",
        "X-RateLimit-Reset-After": "1.0",
        "X-RateLimit-Reset": f"{time.time() + 1:.3f}",
    }
    return web.Response(body=json.dumps(data).encode(), status=status, headers=headers)


async def _read_body(request: web.Request) -> tuple[Any, dict[int, tuple[str, bytes, str]]]:
    """Parse a JSON or multipart body into (json, {file index: (filename, bytes, content type)})."""
    files: dict[int, tuple[str, bytes, str]] = {}
    if request.content_type == "multipart/form-data":
        payload: Any = None
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            assert isinstance(part, aiohttp.BodyPartReader)
            data = await part.read()
            if part.name == "payload_json":
                payload = json.loads(data)
            elif part.name and (m := re.fullmatch(r"files\[(\d+)\]", part.name)):
                content_type = part.headers.get("Content-Type", "application/octet-stream")
                files[int(m[1])] = (part.filename or f"file{m[1]}", bytes(data), content_type)
        return payload, files
    if request.can_read_body:
        text = await request.text()
        if text:
            return json.loads(text), files
    return None, files


def _walk_components(components: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every component, nested ones (rows, containers, sections, labels) included."""
    for component in components:
        yield component
        yield from _walk_components(component.get("components") or [])
        for key in ("accessory", "component"):
            if isinstance(component.get(key), dict):
                yield from _walk_components([component[key]])


def _modal_answers(components: list[dict[str, Any]], values: Mapping[str, str | Sequence[str]]) -> list[dict[str, Any]]:
    """The components of a MODAL_SUBMIT, mirroring the modal's layout."""
    answers: list[dict[str, Any]] = []
    for component in components:
        kind = component["type"]
        if kind == 1:
            answers.append({"type": 1, "components": _modal_answers(component.get("components", []), values)})
        elif kind == 18:  # label wrapping one component
            answers.append({"type": 18, "component": _modal_answers([component["component"]], values)[0]})
        elif "custom_id" in component:
            value = values.get(component["custom_id"], component.get("value") or "")
            if kind == 4:
                answers.append({"type": 4, "custom_id": component["custom_id"], "value": value})
            else:
                answers.append({"type": kind, "custom_id": component["custom_id"], "values": list(value)})
    return answers


def _resolve_embeds(embeds: list[dict[str, Any]], attachments: list[StoredAttachment]) -> list[dict[str, Any]]:
    """Embeds as Discord returns them: attachment:// URLs point at the uploaded files."""
    by_name = {a.filename: a for a in attachments}
    result = []
    for embed in embeds:
        embed = {"type": "rich", **json.loads(json.dumps(embed))}
        for key in ("image", "thumbnail"):
            media = embed.get(key)
            if isinstance(media, dict) and str(media.get("url", "")).startswith("attachment://"):
                attachment = by_name.get(media["url"][len("attachment://") :])
                if attachment is not None:
                    media.update(url=attachment.url, proxy_url=attachment.url)
                    dims = _png_size(attachment.data)
                    if dims:
                        media["width"], media["height"] = dims
        result.append(embed)
    return result


def _validate_message(
    content: str, embeds: list[dict[str, Any]], attachments: list[StoredAttachment], components: list[dict[str, Any]]
) -> None:
    """The limits Discord enforces, answered the way Discord answers them."""
    if len(content) > 2000:
        raise _form_error("content", "Must be 2000 or fewer in length.", "BASE_TYPE_MAX_LENGTH")
    if len(embeds) > 10:
        raise _form_error("embeds", "Must be 10 or fewer in length.", "BASE_TYPE_MAX_LENGTH")
    if len(attachments) > 10:
        raise _form_error("attachments", "Must be 10 or fewer in length.", "BASE_TYPE_MAX_LENGTH")
    total = 0
    for index, embed in enumerate(embeds):
        title, description = embed.get("title") or "", embed.get("description") or ""
        if len(title) > 256:
            raise _form_error(f"embeds.{index}.title", "Must be 256 or fewer in length.", "BASE_TYPE_MAX_LENGTH")
        if len(description) > 4096:
            raise _form_error(f"embeds.{index}.description", "Must be 4096 or fewer in length.", "BASE_TYPE_MAX_LENGTH")
        fields = embed.get("fields") or []
        if len(fields) > 25:
            raise _form_error(f"embeds.{index}.fields", "Must be 25 or fewer in length.", "BASE_TYPE_MAX_LENGTH")
        for number, embed_field in enumerate(fields):
            for key, limit in (("name", 256), ("value", 1024)):
                text, where = str(embed_field.get(key) or ""), f"embeds.{index}.fields.{number}.{key}"
                if not text.strip():
                    raise _form_error(where, "This field is required", "BASE_TYPE_REQUIRED")
                if len(text) > limit:
                    raise _form_error(where, f"Must be {limit} or fewer in length.", "BASE_TYPE_MAX_LENGTH")
        footer, author = (embed.get("footer") or {}).get("text", ""), (embed.get("author") or {}).get("name", "")
        for where, text, limit in (("footer.text", footer, 2048), ("author.name", author, 256)):
            if len(text) > limit:
                message = f"Must be {limit} or fewer in length."
                raise _form_error(f"embeds.{index}.{where}", message, "BASE_TYPE_MAX_LENGTH")
        total += len(title) + len(description) + sum(len(f.get("name", "")) + len(f.get("value", "")) for f in fields)
        total += len(footer) + len(author)
    if total > 6000:
        raise _form_error("embeds", "Embed size exceeds maximum size of 6000")
    for component in _walk_components(components):
        if len(component.get("custom_id", "")) > 100:
            raise _form_error("components", "custom_id must be 100 or fewer in length.", "BASE_TYPE_MAX_LENGTH")


_COMMAND_NAME = re.compile(r"^[-_'\w]{1,32}$")
# Interaction context types (0 a server, 1 the bot's DM, 2 other DMs and group DMs) and installation types.
_CONTEXTS = (0, 1, 2)
_INTEGRATION_TYPES = (0, 1)


def _contexts(command: dict[str, Any]) -> list[int]:
    """Where Discord offers a global command: its contexts; without them the deprecated dm_permission decides, and
    by default a server and the bot's DM."""
    contexts = command.get("contexts")
    if contexts is not None:
        return list(contexts)
    return [0] if command.get("dm_permission") is False else [0, 1]


def _check_offered(command: dict[str, Any], payload: dict[str, Any]) -> None:
    """Raise NotOffered where Discord would not offer the command: a user could not even pick it there."""
    if command.get("guild_id") is not None:
        return  # a server's own commands exist in that server only, which command() already looked in
    if payload["context"] not in _contexts(command):
        where = {0: "a server", 1: "the bot's DM", 2: "a private channel"}[payload["context"]]
        raise NotOffered(f"Discord does not offer /{command['name']} in {where}: its contexts are {_contexts(command)}")


def _validate_command(cmd: dict[str, Any], path: str) -> None:
    """A subset of Discord's checks on application command payloads."""
    name = cmd.get("name", "")
    # User and message commands (types 2, 3) may have spaces and capitals: 1 to 32 characters of anything.
    valid = _COMMAND_NAME.match(name) if cmd.get("type", 1) == 1 else 1 <= len(name) <= 32 and name.strip() == name
    if not valid or (cmd.get("type", 1) == 1 and name != name.lower()):
        raise _form_error(f"{path}.name", f"Invalid command name {name!r}", "APPLICATION_COMMAND_INVALID_NAME")
    if cmd.get("type", 1) == 1 and not 1 <= len(cmd.get("description", "")) <= 100:
        raise _form_error(f"{path}.description", "Must be between 1 and 100 in length.", "BASE_TYPE_BAD_LENGTH")
    for field_name, valid in (("contexts", _CONTEXTS), ("integration_types", _INTEGRATION_TYPES)):
        values = cmd.get(field_name)
        if values is not None and (
            not isinstance(values, list) or any(type(v) is not int or v not in valid for v in values)
        ):
            raise _form_error(f"{path}.{field_name}", f"Value must be a list of {valid}.", "BASE_TYPE_CHOICES")
    _validate_options(cmd.get("options") or [], f"{path}.options")


def _validate_options(options: list[dict[str, Any]], path: str) -> None:
    if len(options) > 25:
        raise _form_error(path, "Must be 25 or fewer in length.", "BASE_TYPE_MAX_LENGTH")
    seen_optional = False
    for index, option in enumerate(options):
        where = f"{path}.{index}"
        if not _COMMAND_NAME.match(option.get("name", "")) or option["name"] != option["name"].lower():
            raise _form_error(f"{where}.name", "Invalid option name", "APPLICATION_COMMAND_INVALID_NAME")
        if not 1 <= len(option.get("description", "")) <= 100:
            raise _form_error(f"{where}.description", "Must be between 1 and 100 in length.", "BASE_TYPE_BAD_LENGTH")
        if option.get("required"):
            if seen_optional:
                raise _form_error(
                    where,
                    "Required options must be placed before non-required options",
                    "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                )
        elif option["type"] not in (1, 2):
            seen_optional = True
        if len(option.get("choices") or []) > 25:
            raise _form_error(f"{where}.choices", "Must be 25 or fewer in length.", "BASE_TYPE_MAX_LENGTH")
        if option["type"] in (1, 2):
            _validate_options(option.get("options") or [], f"{where}.options")


def _png_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG header, as Discord reports them for images."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24 and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return width, height
    return None


def _image_size(data: bytes, content_type: str) -> tuple[int, int] | None:
    """Width and height of any image Discord recognises (PNG from its header, others by decoding the header)."""
    dims = _png_size(data)
    if dims is not None or not content_type.startswith("image/"):
        return dims
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except (UnidentifiedImageError, OSError):
        return None


def _short(value: Any, limit: int = 160) -> str:
    text = json.dumps(value, default=str) if value is not None else "-"
    return text if len(text) <= limit else text[: limit - 3] + "..."
