"""Pruning kept images goes on past folders that change or break while it looks at them."""

from __future__ import annotations

import os
from pathlib import Path

from bot.pipeline.images import DAY, ImageStore

NOW = 1_800_000_000.0


def kept(store: ImageStore, job_id: str, age_days: float) -> Path:
    store.save(job_id, [b"png"])
    folder = store.root / job_id
    when = NOW - age_days * DAY
    os.utime(folder / "1.png", (when, when))
    os.utime(folder, (when, when))
    return folder


def test_prune_skips_a_file_that_vanishes_and_a_stray_file_and_goes_on(tmp_path: Path) -> None:
    store = ImageStore(tmp_path, keep_days=30)
    old = kept(store, "aaaa01", 40)
    saving = kept(store, "bbbb02", 40)
    # Listed, then gone before its stat: what a `.partial` renamed by a save at that moment looks like.
    (saving / "2.png.partial").symlink_to(saving / "renamed-away")
    (store.root / "notes.txt").write_text("not a job")
    fresh = kept(store, "cccc03", 1)

    assert store.prune(NOW) == 1
    assert not old.exists() and fresh.exists()
    assert saving.exists(), "a folder being written is kept until the next round"
