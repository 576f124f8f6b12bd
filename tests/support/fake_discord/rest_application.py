"""REST routes for the bot's identity, the gateway URL, the application, DM channels and command syncs."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tests.support.fake_discord.config import FakeUser
from tests.support.fake_discord.limits import validate_command
from tests.support.fake_discord.state import FakeState
from tests.support.fake_discord.wire import ApiError, form_error, json_response


class ApplicationRoutes(FakeState):
    """GET /users/@me, /gateway, /oauth2/applications/@me; POST /users/@me/channels; GET and PUT commands."""

    async def _get_me(self, request: web.Request, **_: Any) -> web.Response:
        return json_response({**self.bot_user.payload(), "verified": True, "mfa_enabled": False, "flags": 0})

    async def _get_gateway(self, request: web.Request, **_: Any) -> web.Response:
        return json_response({"url": self.gateway_url})

    async def _get_gateway_bot(self, request: web.Request, **_: Any) -> web.Response:
        limit = {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1}
        return json_response({"url": self.gateway_url, "shards": 1, "session_start_limit": limit})

    async def _get_application(self, request: web.Request, **_: Any) -> web.Response:
        # A team's application has a pseudo-user named after the team as its owner.
        owner = FakeUser(id=self.team.id, username=f"team{self.team.id}") if self.team else self.owner
        return json_response(
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
        return json_response(self._channel_payload(channel_id)[0])

    def _check_app(self, app_id: str) -> None:
        if int(app_id) != self.application_id:
            raise ApiError(403, 50001, "Missing Access")

    async def _get_commands(
        self, request: web.Request, app_id: str, guild_id: str | None = None, **_: Any
    ) -> web.Response:
        self._check_app(app_id)
        return json_response(self.commands.get(None if guild_id is None else int(guild_id), []))

    async def _put_commands(
        self, request: web.Request, app_id: str, guild_id: str | None = None, *, body: Any, **_: Any
    ) -> web.Response:
        self._check_app(app_id)
        scope = None if guild_id is None else int(guild_id)
        if scope is not None:
            self.guild(scope)
        if not isinstance(body, list):
            raise form_error("_", "Expected a list of commands")
        stored = []
        for index, cmd in enumerate(body):
            validate_command(cmd, str(index))
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
        return json_response(stored)
