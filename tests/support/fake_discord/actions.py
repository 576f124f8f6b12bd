"""What users do, built as Discord builds it: slash commands, autocomplete, button presses, modal submits, message
commands, posting messages and reactions."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Mapping, Sequence
from types import EllipsisType
from typing import Any

from tests.support.fake_discord.components import modal_answers, walk_components
from tests.support.fake_discord.config import FakeFile
from tests.support.fake_discord.constants import ALL_PERMISSIONS, DEFAULT_BOT_PERMISSIONS, DM_FILESIZE_LIMIT, USER_ID
from tests.support.fake_discord.limits import check_offered
from tests.support.fake_discord.messages import MessageStore
from tests.support.fake_discord.records import FakeInteraction, FakeMessage, guild_field


class UserActions(MessageStore):
    """Interactions and messages from users, dispatched to the client over the gateway."""

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
        check_offered(command, payload)
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
        component = next((c for c in walk_components(msg.components) if c.get("custom_id") == custom_id), None)
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
        payload["data"] = {"custom_id": modal["custom_id"], "components": modal_answers(modal["components"], values)}
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
        check_offered(command, payload)
        data: dict[str, Any] = {
            "id": command["id"],
            "name": name,
            "type": 3,
            "target_id": str(message.id),
            "resolved": {"messages": {str(message.id): {**message.payload(), **guild_field(message)}}},
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
