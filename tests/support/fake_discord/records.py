"""What the fake holds and records for assertions: requests, messages, attachments, interactions, injected failures,
and the gateway session and connection."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, NamedTuple

from aiohttp import web

from tests.support.fake_discord.components import walk_components
from tests.support.fake_discord.constants import EPHEMERAL, LOADING
from tests.support.fake_discord.media import image_size

if TYPE_CHECKING:
    from tests.support.fake_discord.state import FakeState


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
        dims = image_size(self.data, self.content_type)
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
        return [c["custom_id"] for c in walk_components(self.components) if "custom_id" in c]

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
    _fake: FakeState | None = field(default=None, repr=False, compare=False)

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


@dataclass
class GatewaySession:
    """The gateway session the client identified (or resumed), with every event kept for RESUME replay."""

    id: str
    intents: int
    identify: dict[str, Any]
    seq: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    ready_sent: bool = False


@dataclass
class GatewayConnection:
    """One websocket connection of the client."""

    ws: web.WebSocketResponse
    query: Mapping[str, str]
    live: bool = False  # identified or resumed: dispatches may flow
    last_heartbeat_seq: int | None = None
    heartbeats: int = 0


def guild_field(message: FakeMessage) -> dict[str, str]:
    """The ``guild_id`` a gateway event about this message carries (none in a DM)."""
    return {} if message.guild_id is None else {"guild_id": str(message.guild_id)}
