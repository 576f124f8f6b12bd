"""Throttled status edits: about one a second per message, one in flight, none after the job ends."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)

Clock = Callable[[], float]
# Rewrites the status to a text and, when there is a new one, a preview image.
Edit = Callable[[str, bytes | None], Coroutine[Any, Any, None]]


class ProgressReporter:
    """Edits one job's status message; Discord answers 429 to messages edited more often than this."""

    def __init__(self, edit: Edit, clock: Clock, interval: float = 1.0) -> None:
        self._edit = edit
        self._clock = clock
        self._interval = interval
        self._last: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._finished = False
        self._preview: bytes | None = None

    def report(self, text: str, preview: bytes | None = None) -> bool:
        """Start an edit to `text` unless one is in flight or the last was under `interval` ago.

        A preview that cannot be shown now is kept, and goes with the next edit unless a newer one came.
        """
        if preview is not None:
            self._preview = preview
        now = self._clock()
        if self._finished or (self._task is not None and not self._task.done()):
            return False
        if self._last is not None and now - self._last < self._interval:
            return False
        self._last = now
        preview, self._preview = self._preview, None
        self._task = asyncio.create_task(self._edit(text, preview))
        return True

    async def finish(self) -> None:
        """Stop reporting and wait for the edit in flight, so a late one cannot overwrite the final state."""
        self._finished = True
        if self._task is not None:
            try:
                await self._task
            except Exception:
                log.warning("a progress edit failed", exc_info=True)
