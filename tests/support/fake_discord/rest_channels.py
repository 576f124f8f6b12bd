"""REST routes for channels: fetching one, typing, history, and messages sent, fetched, edited or deleted there."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tests.support.fake_discord.config import FakeGuild
from tests.support.fake_discord.constants import EPHEMERAL
from tests.support.fake_discord.messages import MessageStore
from tests.support.fake_discord.wire import ApiError, form_error, json_response


class ChannelRoutes(MessageStore):
    """GET /channels/{id}, POST typing, GET history, and /channels/{id}/messages[/{id}]."""

    def _channel_or_404(self, channel_id: str) -> tuple[dict[str, Any], FakeGuild | None]:
        try:
            return self._channel_payload(int(channel_id))
        except AssertionError:
            raise ApiError(404, 10003) from None

    async def _get_channel(self, request: web.Request, channel_id: str, **_: Any) -> web.Response:
        return json_response(self._channel_or_404(channel_id)[0])

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
        return json_response([m.payload() for m in found])

    async def _create_channel_message(
        self, request: web.Request, channel_id: str, *, body: Any, files: dict[int, Any], **_: Any
    ) -> web.Response:
        self._channel_or_404(channel_id)
        body = dict(body or {})
        if (body.get("flags") or 0) & EPHEMERAL:
            raise form_error("flags", "Ephemeral messages can only be sent as interaction responses")
        nonce = body.get("nonce")
        if nonce is not None and body.get("enforce_nonce"):
            # Discord answers a retried send with the message the first attempt created.
            for earlier in self.messages(int(channel_id)):
                if earlier.nonce == str(nonce) and earlier.author_id == self.bot_user.id:
                    return json_response(earlier.payload())
        message = self._new_message(int(channel_id), body, files, "channel")
        self._messages[message.id] = message
        await self._message_event("MESSAGE_CREATE", message)
        return json_response(message.payload())

    async def _channel_message(
        self, request: web.Request, channel_id: str, message_id: str, *, body: Any, files: dict[int, Any], **_: Any
    ) -> web.Response:
        self._channel_or_404(channel_id)
        message = self._messages.get(int(message_id))
        # Ephemeral messages are invisible to the channel endpoints: only the interaction webhook reaches them.
        if message is None or message.deleted or message.ephemeral or message.channel_id != int(channel_id):
            raise ApiError(404, 10008)
        if request.method == "PATCH" and message.author_id != self.bot_user.id:
            raise ApiError(403, 50005, "Cannot edit a message authored by another user")
        return await self._message_verb(request.method, message, body, files)
