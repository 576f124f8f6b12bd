"""FakeDiscord itself: one aiohttp server for the gateway and REST, its lifecycle, routing and failure injection."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import discord
import discord.gateway
import discord.http
import yarl
from aiohttp import web

from tests.support.fake_discord.actions import UserActions
from tests.support.fake_discord.constants import API_PREFIX, ERROR_MESSAGES
from tests.support.fake_discord.records import FakeFailure, FakeRequest
from tests.support.fake_discord.rest_application import ApplicationRoutes
from tests.support.fake_discord.rest_channels import ChannelRoutes
from tests.support.fake_discord.rest_interactions import InteractionRoutes
from tests.support.fake_discord.wire import ApiError, Unhandled, failure_response, json_response, read_body

_Handler = Callable[..., Awaitable[web.StreamResponse]]


# Longer than any bot's shutdown grace in the tests (30 s), far shorter than a hung run.
CLOSE_TIMEOUT = 90.0


class FakeDiscord(UserActions, InteractionRoutes, ChannelRoutes, ApplicationRoutes):
    """A fake Discord API + gateway on 127.0.0.1, for the real discord.py client."""

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
        closing = asyncio.ensure_future(client.close())
        done, _ = await asyncio.wait({closing}, timeout=CLOSE_TIMEOUT)
        if not done:
            # A close that never ends would hang the whole run: fail instead, saying where each task waits.
            stacks = io.StringIO()
            for pending in asyncio.all_tasks():
                pending.print_stack(file=stacks)
            closing.cancel()
            raise AssertionError(
                f"client.close() did not finish in {CLOSE_TIMEOUT:.0f} s; the tasks:\n{stacks.getvalue()}"
            )
        closing.result()
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
            message = "You are being rate limited." if status == 429 else ERROR_MESSAGES.get(code, f"{status}: error")
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

    # ----------------------------------------------------------------- HTTP plumbing

    @functools.cached_property
    def _routes(self) -> list[tuple[str, re.Pattern[str], _Handler]]:
        """The REST route table: method, path pattern (relative to /api/v10) and handler."""
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
        body, files = await read_body(request)
        status, unhandled = 500, False
        try:
            response = await self._route(request, raw_path, path, body, files)
            status = response.status
            return response
        except ApiError as err:
            unhandled = isinstance(err, Unhandled)
            status = err.status
            return err.response()
        except Exception as exc:
            # 503: discord.py raises it at once (it retries 500 with multi-second sleeps).
            self.internal_errors.append(exc)
            status = 503
            return json_response({"message": f"fake discord bug: {exc!r}", "code": 0}, status=503)
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
            return failure_response(failure)
        for method, pattern, handler in self._routes:
            match = pattern.match(path)
            if match and method == request.method and raw_path.startswith(API_PREFIX):
                # Webhook and interaction endpoints authenticate by token in the URL, the rest by header.
                by_header = not path.startswith(("/interactions/", "/webhooks/"))
                if by_header and request.headers.get("Authorization") != f"Bot {self.token}":
                    raise ApiError(401, 0, "401: Unauthorized")
                return await handler(request, *match.groups(), body=body, files=files)
        raise Unhandled(404, 0, "404: Not Found")

    def _serve_attachment(self, raw_path: str) -> web.Response:
        parts = raw_path.split("/")
        attachment = self._attachments.get(int(parts[3])) if len(parts) >= 5 and parts[3].isdigit() else None
        if attachment is None:
            return web.Response(status=404, text="not found")
        return web.Response(body=attachment.data, headers={"Content-Type": attachment.content_type})
