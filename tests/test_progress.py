from __future__ import annotations

import asyncio

from bot.pipeline.progress import ProgressReporter


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_edits_are_throttled_to_one_per_interval() -> None:
    clock = FakeClock()
    edits: list[str] = []

    async def edit(text: str, preview: bytes | None) -> None:
        edits.append(text)

    reporter = ProgressReporter(edit, clock, interval=1.0)
    assert reporter.report("step 1")
    await asyncio.sleep(0)
    clock.now += 0.4
    assert not reporter.report("step 2")
    clock.now += 0.6
    assert reporter.report("step 3")
    await reporter.finish()
    clock.now += 5
    assert not reporter.report("step 4"), "no edit may start after the job has finished"
    assert edits == ["step 1", "step 3"]


async def test_no_second_edit_while_one_is_in_flight_and_finish_waits_for_it() -> None:
    clock = FakeClock()
    release = asyncio.Event()
    edits: list[str] = []

    async def slow_edit(text: str, preview: bytes | None) -> None:
        await release.wait()
        edits.append(text)

    reporter = ProgressReporter(slow_edit, clock, interval=1.0)
    assert reporter.report("step 1")
    clock.now += 10
    assert not reporter.report("step 2")
    finishing = asyncio.create_task(reporter.finish())
    await asyncio.sleep(0)
    assert not finishing.done()
    release.set()
    await finishing
    assert edits == ["step 1"]


async def test_a_failed_edit_does_not_break_finish() -> None:
    async def broken(text: str, preview: bytes | None) -> None:
        raise RuntimeError("429")

    reporter = ProgressReporter(broken, FakeClock())
    reporter.report("step 1")
    await reporter.finish()


async def test_a_preview_that_came_between_edits_goes_with_the_next_one() -> None:
    clock = FakeClock()
    edits: list[tuple[str, bytes | None]] = []

    async def edit(text: str, preview: bytes | None) -> None:
        edits.append((text, preview))

    reporter = ProgressReporter(edit, clock, interval=1.0)
    reporter.report("step 1")
    await asyncio.sleep(0)
    clock.now += 0.5
    assert not reporter.report("step 2", preview=b"old")
    clock.now += 0.2
    assert not reporter.report("step 3", preview=b"new")
    clock.now += 0.5
    assert reporter.report("step 4")
    await asyncio.sleep(0)
    clock.now += 1
    assert reporter.report("step 5")
    await reporter.finish()
    assert edits == [("step 1", None), ("step 4", b"new"), ("step 5", None)]
