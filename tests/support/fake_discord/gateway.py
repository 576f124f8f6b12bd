"""The gateway: HELLO, IDENTIFY/READY, RESUME with replay, heartbeats, member requests and DISPATCH events."""

from __future__ import annotations

import contextlib
import json
import secrets
from datetime import datetime, timezone
from typing import Any, cast

import aiohttp
from aiohttp import web

from tests.support.fake_discord.config import FakeGuild, FakeMember
from tests.support.fake_discord.records import GatewayConnection, GatewaySession
from tests.support.fake_discord.state import FakeState


class Gateway(FakeState):
    """The websocket the client connects to, and the events the fake sends it."""

    # ----------------------------------------------------------------- waiting on the client

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

    # ----------------------------------------------------------------- the websocket

    async def _gateway_handler(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        conn = GatewayConnection(ws=ws, query=dict(request.query))
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

    async def _send(self, conn: GatewayConnection, frame: dict[str, Any]) -> None:
        assert self._gateway_lock is not None
        async with self._gateway_lock:
            await conn.ws.send_str(json.dumps(frame))  # text frames: discord.py only inflates bytes

    async def _on_gateway_message(self, conn: GatewayConnection, frame: dict[str, Any]) -> None:
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

    async def _identify(self, conn: GatewayConnection, d: dict[str, Any]) -> None:
        if d.get("token") != self.token:
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return
        session = GatewaySession(id=secrets.token_hex(16), intents=int(d.get("intents") or 0), identify=d)
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

    async def _resume(self, conn: GatewayConnection, d: dict[str, Any]) -> None:
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
