"""What each engine has done lately, as /sdadmin workers and the metrics read it (no Discord, no Prometheus)."""

from __future__ import annotations

import enum
from collections import Counter, deque
from dataclasses import dataclass, field

# Images per minute are counted over this window.
RECENT_S = 600.0


class Ending(str, enum.Enum):
    """How a job left its engine."""

    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class JobEnd:
    """One job leaving its engine: which engine, how, and its times (from /imagine to the engine, drawing, in all)."""

    engine: int
    device: str
    ending: Ending
    images: int
    waited_s: float
    drawn_s: float
    total_s: float
    worker: str = "local"  # the worker serving the engine, or "local"


@dataclass(frozen=True)
class EngineStatus:
    """One engine as an operator sees it."""

    number: int
    device: str
    model: str | None
    in_flight: int
    images: int
    images_per_minute: float
    jobs: dict[Ending, int]
    last_batch_at: float | None
    restarts: int
    host: str = "local"
    last_heartbeat: float | None = None


@dataclass
class EngineStats:
    """Counters kept for one engine by the dispatcher."""

    jobs: Counter[Ending] = field(default_factory=Counter)
    images: int = 0
    model: str | None = None
    last_batch_at: float | None = None
    _recent: deque[tuple[float, int]] = field(default_factory=deque)

    def ended(self, end: JobEnd, now: float) -> None:
        self.jobs[end.ending] += 1
        self.images += end.images
        if end.images:
            self._recent.append((now, end.images))

    def images_per_minute(self, now: float) -> float:
        """Images finished in the last ten minutes, per minute."""
        while self._recent and self._recent[0][0] < now - RECENT_S:
            self._recent.popleft()
        return sum(images for _, images in self._recent) / (RECENT_S / 60)
