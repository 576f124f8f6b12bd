"""Result images kept on disk for the buttons that work from them, for SDBOT_KEEP_DAYS."""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

_JOB_ID = re.compile(r"^[0-9a-f]{4,32}$")
DAY = 86400.0


class ImageStore:
    """`<root>/jobs/<job id>/<n>.png`, image n counted from 1 as the buttons count them."""

    def __init__(self, root: Path, keep_days: float) -> None:
        self.root = root / "jobs"
        self.keep_seconds = keep_days * DAY

    def _folder(self, job_id: str) -> Path:
        if not _JOB_ID.match(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        return self.root / job_id

    def save(self, job_id: str, pngs: Sequence[bytes]) -> None:
        """Write a job's images, numbered from 1."""
        for index, png in enumerate(pngs, start=1):
            self.save_one(job_id, index, png)

    def save_one(self, job_id: str, index: int, png: bytes) -> None:
        """Write one image, to a temporary name first so a crash leaves no half file."""
        folder = self._folder(job_id)
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f"{index}.png.partial"
        partial.write_bytes(png)
        os.replace(partial, folder / f"{index}.png")

    def discard(self, job_id: str) -> None:
        """Forget a job's images (one refused after its image was kept)."""
        shutil.rmtree(self._folder(job_id), ignore_errors=True)

    def has(self, job_id: str, index: int) -> bool:
        """Whether image `index` of the job is still kept here."""
        return (self._folder(job_id) / f"{index}.png").is_file()

    def load(self, job_id: str, index: int) -> bytes | None:
        """Image `index` of a job, or None when it was never kept or has expired."""
        try:
            return (self._folder(job_id) / f"{index}.png").read_bytes()
        except (OSError, ValueError):
            return None

    def prune(self, now: float) -> int:
        """Delete the images of jobs finished more than SDBOT_KEEP_DAYS before `now`; return how many jobs."""
        if not self.root.is_dir():
            return 0
        removed = 0
        for folder in self.root.iterdir():
            try:
                newest = max((f.stat().st_mtime for f in folder.iterdir()), default=folder.stat().st_mtime)
            except OSError as exc:
                # Changed since listed (a save renames its `.partial` file) or unreadable: keep it, look next time.
                log.info("skipped %s while removing old images: %s", folder, exc)
                continue
            if now - newest > self.keep_seconds:
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        if removed:
            log.info("removed the images of %d jobs older than %.0f days", removed, self.keep_seconds / DAY)
        return removed
