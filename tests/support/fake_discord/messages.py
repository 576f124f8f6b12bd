"""Messages as Discord stores them: building and editing them from a request body, uploads, message events."""

from __future__ import annotations

import json
import mimetypes
import urllib.parse
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from tests.support.fake_discord.constants import (
    COMPONENTS_V2,
    DIRECT_MESSAGES_INTENT,
    DM_FILESIZE_LIMIT,
    EPHEMERAL,
    GUILD_MESSAGES_INTENT,
    LOADING,
    SUPPRESS_EMBEDS,
)
from tests.support.fake_discord.gateway import Gateway
from tests.support.fake_discord.limits import validate_message
from tests.support.fake_discord.media import png_size
from tests.support.fake_discord.records import FakeInteraction, FakeMessage, StoredAttachment, guild_field
from tests.support.fake_discord.wire import ApiError, form_error, json_response


class MessageStore(Gateway):
    """Creates, edits, reads and deletes messages for the REST routes, and tells the gateway."""

    async def _message_verb(self, method: str, message: FakeMessage, body: Any, files: dict[int, Any]) -> web.Response:
        if method == "GET":
            return json_response(message.payload())
        if method == "DELETE":
            message.deleted = True
            if not message.ephemeral:
                await self._dispatch_if_intended(
                    message,
                    "MESSAGE_DELETE",
                    {"id": str(message.id), "channel_id": str(message.channel_id), **guild_field(message)},
                )
            return web.Response(status=204)
        self._edit_message(message, body or {}, files)
        await self._message_event("MESSAGE_UPDATE", message)
        return json_response(message.payload())

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
        validate_message(content, embeds, attachments, body.get("components") or [])
        if not (
            allow_empty
            or content
            or embeds
            or attachments
            or body.get("components")
            or body.get("sticker_ids")
            or body.get("poll")
        ):
            raise ApiError(400, 50006)
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
        validate_message(content, embeds, attachments, components)
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
                raise ApiError(413, 40005, f"Request entity too large: {filename} is {len(data)} bytes > {limit}")
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
                raise form_error("attachments", f"Unknown attachment id {spec_id}")
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
        await self._dispatch_if_intended(message, event, {**message.payload(), **guild_field(message)})

    async def _dispatch_if_intended(self, message: FakeMessage, event: str, data: dict[str, Any]) -> None:
        session = self._session
        if not self.dispatch_message_events or session is None or not session.ready_sent:
            return
        needed = GUILD_MESSAGES_INTENT if message.guild_id is not None else DIRECT_MESSAGES_INTENT
        if session.intents & needed:
            await self._dispatch(event, data)


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
                    dims = png_size(attachment.data)
                    if dims:
                        media["width"], media["height"] = dims
        result.append(embed)
    return result
