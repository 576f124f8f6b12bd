"""Progress frames for one batch: each step for every job still wanted, now and then with a preview."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from core.wire import GenerateRequest, Progress
from engine.preview import Previewer

# The bot edits a progress message about once a second; previews more often would be decoded for nothing.
PREVIEW_INTERVAL = 1.0


class JobCancelled(Exception):
    """The bot asked to stop every job of the running batch."""


class Cancellations(Protocol):
    def is_cancelled(self, job_id: str) -> bool: ...


class BatchProgress:
    """Step callbacks for Painter.draw; raises JobCancelled between steps once no job of the batch is wanted."""

    def __init__(
        self,
        jobs: Sequence[GenerateRequest],
        send: Callable[[Progress], None],
        cancellations: Cancellations,
        previewer: Previewer | None,
        clock: Callable[[], float],
        interval: float = PREVIEW_INTERVAL,
    ) -> None:
        self.jobs = jobs
        self.send = send
        self.cancellations = cancellations
        self.previewer = previewer
        self.clock = clock
        self.interval = interval
        self._last_preview = clock()
        self._previews: dict[str, bytes] = {}

    def wanted(self) -> list[GenerateRequest]:
        return [job for job in self.jobs if not self.cancellations.is_cancelled(job.job_id)]

    def on_latents(self, owners: Sequence[int], latents: Any) -> None:
        """Preview each job's first image, at most once per interval."""
        if self.previewer is None:
            return
        now = self.clock()
        if now - self._last_preview < self.interval:
            return
        self._last_preview = now
        wanted = {job.job_id for job in self.wanted()}
        for index, job in enumerate(self.jobs):
            if index in owners and job.job_id in wanted:
                self._previews[job.job_id] = self.previewer.preview(latents[list(owners).index(index)])

    def on_step(self, step: int, total: int) -> None:
        """Tell the bot where each wanted job is, with the previews made since the last step."""
        wanted = self.wanted()
        if not wanted:
            raise JobCancelled
        previews, self._previews = self._previews, {}
        for job in wanted:
            self.send(Progress(job_id=job.job_id, step=step, total=total, preview=previews.get(job.job_id)))
