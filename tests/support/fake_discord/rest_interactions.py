"""REST routes for interaction callbacks and the interaction webhook (followups, original response)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from tests.support.fake_discord.constants import EPHEMERAL, LOADING
from tests.support.fake_discord.messages import MessageStore
from tests.support.fake_discord.records import FakeCallback, FakeInteraction, FakeMessage
from tests.support.fake_discord.wire import ApiError, json_response


class InteractionRoutes(MessageStore):
    """POST /interactions/{id}/{token}/callback and /webhooks/{app}/{token}[/messages/{id}]."""

    async def _interaction_callback(
        self, request: web.Request, interaction_id: str, token: str, *, body: Any, files: dict[int, Any], **_: Any
    ) -> web.Response:
        inter = self._interactions_by_id.get(int(interaction_id))
        loop = asyncio.get_running_loop()
        if inter is None or inter.token != token or inter.expired:
            raise ApiError(404, 10062)
        if self.interaction_deadline is not None and loop.time() - inter.sent_at > self.interaction_deadline:
            raise ApiError(404, 10062)  # Discord forgets an interaction not answered within 3 s
        if inter.callbacks:
            raise ApiError(400, 40060)
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
                raise ApiError(400, 50035, "Interaction callback type UPDATE_MESSAGE needs a component interaction")
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
        return json_response(response)

    def _webhook_interaction(self, app_id: str, token: str) -> FakeInteraction:
        inter = self._interactions_by_token.get(token)
        if int(app_id) != self.application_id or inter is None:
            raise ApiError(404, 10015)
        if inter.expired:
            raise ApiError(401, 50027)
        if not inter.callbacks:
            raise ApiError(404, 10015)  # the webhook exists only once the interaction is acknowledged
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
            return json_response(message.payload())
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
            raise ApiError(404, 10008)
        return await self._message_verb(request.method, message, body, files)


def _inter_channel(inter: FakeInteraction) -> int:
    """The channel id an interaction happened in."""
    return int(inter.payload["channel_id"])
