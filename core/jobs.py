"""A job: what to draw, who asked and where the result goes."""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass, replace

from core.params import GenerationParams


class Flagged(str, enum.Enum):
    """What happens to an image the safety checker flags (POST: the checker does not run)."""

    POST = "post"
    SPOILER = "spoiler"
    WITHHOLD = "withhold"


class JobState(str, enum.Enum):
    """queued → running → done → delivered, or failed with a reason, or cancelled by its member or an admin."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    DELIVERED = "delivered"
    FAILED = "failed"
    CANCELLED = "cancelled"


def new_job_id() -> str:
    """Short enough for a button's custom_id and for members to quote."""
    return secrets.token_hex(5)


@dataclass(frozen=True)
class Requester:
    """Who pressed a button, where, when, and which message the result should answer."""

    user_id: int
    user_name: str
    guild_id: int | None
    channel_id: int
    now: float
    reply_to: int | None = None


@dataclass(frozen=True)
class Job:
    """One member's request, as stored in SQLite."""

    id: str
    params: GenerationParams
    user_id: int
    user_name: str
    guild_id: int | None
    channel_id: int
    created_at: float
    message_id: int | None = None
    state: JobState = JobState.QUEUED
    error: str | None = None
    result_message_id: int | None = None
    # Jobs made by a button draw over image `source_index` (1-based) of job `parent_id`,
    # and answer as a reply to the message the button was on.
    parent_id: str | None = None
    source_index: int | None = None
    reply_to: int | None = None
    # The largest file Discord accepts from this job's interaction (None: the 10 MiB every server allows).
    size_limit: int | None = None
    # What the channel's policy does with images the safety checker flags, and which ones it flagged (from 1).
    on_flagged: Flagged = Flagged.POST
    flagged: tuple[int, ...] = ()
    # Posted with the member named but not pinged (their /settings).
    quiet: bool = False
    # The member's turns per round of the fair queue when it was taken (their roles'), kept for a restart.
    turns: int = 1

    @property
    def withheld(self) -> tuple[int, ...]:
        """The images (from 1) not posted because the checker flagged them and the policy withholds them."""
        return self.flagged if self.on_flagged is Flagged.WITHHOLD else ()

    def with_message(self, message_id: int) -> Job:
        """The job once its acknowledgement message exists."""
        return replace(self, message_id=message_id)

    def _child(
        self, requester: Requester, params: GenerationParams, parent_id: str | None, source_index: int | None
    ) -> Job:
        return Job(
            id=new_job_id(),
            params=params.validate(),
            user_id=requester.user_id,
            user_name=requester.user_name,
            guild_id=requester.guild_id,
            channel_id=requester.channel_id,
            created_at=requester.now,
            parent_id=parent_id,
            source_index=source_index,
            reply_to=requester.reply_to,
        )

    def rerolled(self, requester: Requester, seed: int) -> Job:
        """The same job from a new seed; for an upscale or outpaint, the same pass over the same image."""
        return self._child(requester, self.params.rerolled(seed), self.parent_id, self.source_index)

    def variation(self, requester: Requester, index: int, size: tuple[int, int], strength: str, seed: int) -> Job:
        """img2img from image `index` of this job, subtle or strong."""
        return self._child(requester, self.params.variation(size, strength, seed), self.id, index)

    def upscaled(self, requester: Requester, index: int, size: tuple[int, int], seed: int, upscaler: str) -> Job:
        """Image `index` of this job at twice its size, enlarged by `upscaler` before its detail pass."""
        return self._child(requester, self.params.upscaled(size, seed, upscaler), self.id, index)

    def faces_fixed(self, requester: Requester, index: int, size: tuple[int, int], seed: int) -> Job:
        """Image `index` of this job with its faces redrawn."""
        return self._child(requester, self.params.faces_fixed(size, seed), self.id, index)

    def zoomed_out(self, requester: Requester, index: int, size: tuple[int, int], factor: float, seed: int) -> Job:
        """Image `index` of this job shrunk into a canvas of its size, the border drawn."""
        return self._child(requester, self.params.zoomed_out(size, factor, seed), self.id, index)

    def panned(self, requester: Requester, index: int, size: tuple[int, int], direction: str, seed: int) -> Job:
        """Image `index` of this job extended by half towards `direction`."""
        return self._child(requester, self.params.panned(size, direction, seed), self.id, index)

    def remixed(self, requester: Requester, params: GenerationParams) -> Job:
        """This job with edited settings; one drawn over an image keeps drawing over that image."""
        return self._child(requester, params, self.parent_id, self.source_index)
