"""Throttled status edits: about one a second per message, one in flight, none after the job ends."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)

Clock = Callable[[], float]


class ProgressReporter:
    """Edits one job's status message; Discord answers 429 to messages edited more often than this."""

    def __init__(self, edit: Callable[[str], Coroutine[Any, Any, None]], clock: Clock, interval: float = 1.0) -> None:
        self._edit = edit
        self._clock = clock
        self._interval = interval
        self._last: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._finished = False

    def report(self, text: str) -> bool:
        """Start an edit to `text` unless one is in flight or the last was under `interval` ago."""
        now = self._clock()
        if self._finished or (self._task is not None and not self._task.done()):
            return False
        if self._last is not None and now - self._last < self._interval:
            return False
        self._last = now
        self._task = asyncio.create_task(self._edit(text))
        return True

    async def finish(self) -> None:
        """Stop reporting and wait for the edit in flight, so a late one cannot overwrite the final state."""
        self._finished = True
        if self._task is not None:
            try:
                await self._task
            except Exception:
                log.warning("a progress edit failed", exc_info=True)
