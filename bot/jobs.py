"""A job: what to draw, who asked and where the result goes."""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass, replace

from engine.params import GenerationParams


class JobState(str, enum.Enum):
    """queued → running → done → delivered, or failed with a reason."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    DELIVERED = "delivered"
    FAILED = "failed"


def new_job_id() -> str:
    """Short enough for a button's custom_id and for members to quote."""
    return secrets.token_hex(5)


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

    def with_message(self, message_id: int) -> Job:
        """The job once its acknowledgement message exists."""
        return replace(self, message_id=message_id)
