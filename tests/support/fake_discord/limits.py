"""Discord's validation: the limits of a message, the checks on synced commands, and where a command is offered."""

from __future__ import annotations

import re
from typing import Any

from tests.support.fake_discord.components import walk_components
from tests.support.fake_discord.records import StoredAttachment
from tests.support.fake_discord.wire import form_error


class NotOffered(AssertionError):
    """Discord does not offer this command where the test tried to use it (its contexts exclude the place)."""


def validate_message(
    content: str, embeds: list[dict[str, Any]], attachments: list[StoredAttachment], components: list[dict[str, Any]]
) -> None:
    """The limits Discord enforces, answered the way Discord answers them."""
    if len(content) > 2000:
        raise form_error("content", "Must be 2000 or fewer in length.", "BASE_TYPE_MAX_LENGTH")
    if len(embeds) > 10:
        raise form_error("embeds", "Must be 10 or fewer in length.", "BASE_TYPE_MAX_LENGTH")
    if len(attachments) > 10:
        raise form_error("attachments", "Must be 10 or fewer in length.", "BASE_TYPE_MAX_LENGTH")
    total = 0
    for index, embed in enumerate(embeds):
        title, description = embed.get("title") or "", embed.get("description") or ""
        if len(title) > 256:
            raise form_error(f"embeds.{index}.title", "Must be 256 or fewer in length.", "BASE_TYPE_MAX_LENGTH")
        if len(description) > 4096:
            raise form_error(f"embeds.{index}.description", "Must be 4096 or fewer in length.", "BASE_TYPE_MAX_LENGTH")
        fields = embed.get("fields") or []
        if len(fields) > 25:
            raise form_error(f"embeds.{index}.fields", "Must be 25 or fewer in length.", "BASE_TYPE_MAX_LENGTH")
        for number, embed_field in enumerate(fields):
            for key, limit in (("name", 256), ("value", 1024)):
                text, where = str(embed_field.get(key) or ""), f"embeds.{index}.fields.{number}.{key}"
                if not text.strip():
                    raise form_error(where, "This field is required", "BASE_TYPE_REQUIRED")
                if len(text) > limit:
                    raise form_error(where, f"Must be {limit} or fewer in length.", "BASE_TYPE_MAX_LENGTH")
        footer, author = (embed.get("footer") or {}).get("text", ""), (embed.get("author") or {}).get("name", "")
        for where, text, limit in (("footer.text", footer, 2048), ("author.name", author, 256)):
            if len(text) > limit:
                message = f"Must be {limit} or fewer in length."
                raise form_error(f"embeds.{index}.{where}", message, "BASE_TYPE_MAX_LENGTH")
        total += len(title) + len(description) + sum(len(f.get("name", "")) + len(f.get("value", "")) for f in fields)
        total += len(footer) + len(author)
    if total > 6000:
        raise form_error("embeds", "Embed size exceeds maximum size of 6000")
    for component in walk_components(components):
        if len(component.get("custom_id", "")) > 100:
            raise form_error("components", "custom_id must be 100 or fewer in length.", "BASE_TYPE_MAX_LENGTH")


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


def check_offered(command: dict[str, Any], payload: dict[str, Any]) -> None:
    """Raise NotOffered where Discord would not offer the command: a user could not even pick it there."""
    if command.get("guild_id") is not None:
        return  # a server's own commands exist in that server only, which command() already looked in
    if payload["context"] not in _contexts(command):
        where = {0: "a server", 1: "the bot's DM", 2: "a private channel"}[payload["context"]]
        raise NotOffered(f"Discord does not offer /{command['name']} in {where}: its contexts are {_contexts(command)}")


def validate_command(cmd: dict[str, Any], path: str) -> None:
    """A subset of Discord's checks on application command payloads."""
    name = cmd.get("name", "")
    # User and message commands (types 2, 3) may have spaces and capitals: 1 to 32 characters of anything.
    valid = _COMMAND_NAME.match(name) if cmd.get("type", 1) == 1 else 1 <= len(name) <= 32 and name.strip() == name
    if not valid or (cmd.get("type", 1) == 1 and name != name.lower()):
        raise form_error(f"{path}.name", f"Invalid command name {name!r}", "APPLICATION_COMMAND_INVALID_NAME")
    if cmd.get("type", 1) == 1 and not 1 <= len(cmd.get("description", "")) <= 100:
        raise form_error(f"{path}.description", "Must be between 1 and 100 in length.", "BASE_TYPE_BAD_LENGTH")
    for field_name, valid in (("contexts", _CONTEXTS), ("integration_types", _INTEGRATION_TYPES)):
        values = cmd.get(field_name)
        if values is not None and (
            not isinstance(values, list) or any(type(v) is not int or v not in valid for v in values)
        ):
            raise form_error(f"{path}.{field_name}", f"Value must be a list of {valid}.", "BASE_TYPE_CHOICES")
    _validate_options(cmd.get("options") or [], f"{path}.options")


def _validate_options(options: list[dict[str, Any]], path: str) -> None:
    if len(options) > 25:
        raise form_error(path, "Must be 25 or fewer in length.", "BASE_TYPE_MAX_LENGTH")
    seen_optional = False
    for index, option in enumerate(options):
        where = f"{path}.{index}"
        if not _COMMAND_NAME.match(option.get("name", "")) or option["name"] != option["name"].lower():
            raise form_error(f"{where}.name", "Invalid option name", "APPLICATION_COMMAND_INVALID_NAME")
        if not 1 <= len(option.get("description", "")) <= 100:
            raise form_error(f"{where}.description", "Must be between 1 and 100 in length.", "BASE_TYPE_BAD_LENGTH")
        if option.get("required"):
            if seen_optional:
                raise form_error(
                    where,
                    "Required options must be placed before non-required options",
                    "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                )
        elif option["type"] not in (1, 2):
            seen_optional = True
        if len(option.get("choices") or []) > 25:
            raise form_error(f"{where}.choices", "Must be 25 or fewer in length.", "BASE_TYPE_MAX_LENGTH")
        if option["type"] in (1, 2):
            _validate_options(option.get("options") or [], f"{where}.options")
