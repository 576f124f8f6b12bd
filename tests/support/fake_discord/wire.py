"""Discord's HTTP shapes: JSON answers with rate-limit headers, error answers, injected failures, request bodies."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import aiohttp
from aiohttp import web

from tests.support.fake_discord.constants import ERROR_MESSAGES, JSON_HEADERS
from tests.support.fake_discord.records import FakeFailure


class ApiError(Exception):
    """An error answer with Discord's JSON shape."""

    def __init__(self, status: int, code: int, message: str | None = None, errors: dict[str, Any] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message or ERROR_MESSAGES.get(code, f"{status}: error")
        self.errors = errors

    def response(self) -> web.Response:
        """The answer as Discord sends it."""
        body: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.errors:
            body["errors"] = self.errors
        return json_response(body, status=self.status)


class Unhandled(ApiError):
    """No route matches: answered 404 and recorded in ``fake.unhandled``."""


def form_error(path: str, message: str, code: str = "BASE_TYPE_INVALID") -> ApiError:
    """A 400/50035 "Invalid Form Body" with one field error, as Discord nests them."""
    errors: dict[str, Any] = {"_errors": [{"code": code, "message": message}]}
    for part in reversed(path.split(".")):
        errors = {part: errors}
    return ApiError(400, 50035, "Invalid Form Body", errors)


def json_response(data: Any, status: int = 200) -> web.Response:
    """A JSON answer with the exact Content-Type and rate-limit headers discord.py expects."""
    # Generous rate-limit headers let discord.py's buckets run requests concurrently without sleeping.
    headers = {
        **JSON_HEADERS,
        "X-RateLimit-Limit": "50",
        "X-RateLimit-Remaining": "49",
        "X-RateLimit-Reset-After": "1.0",
        "X-RateLimit-Reset": f"{time.time() + 1:.3f}",
    }
    return web.Response(body=json.dumps(data).encode(), status=status, headers=headers)


async def read_body(request: web.Request) -> tuple[Any, dict[int, tuple[str, bytes, str]]]:
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


def failure_response(failure: FakeFailure) -> web.Response:
    """The answer to a request an injected failure matched (a 429 with the headers discord.py honours)."""
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
