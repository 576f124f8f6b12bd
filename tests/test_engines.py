"""Several engines in one box (SDBOT_DEVICE as a list): the devices setting, what a job may ask of them all, and the
real bot feeding two fake engines at once, each with batches built for it and never more than two in flight."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.app import SdBot
from bot.pipeline.dispatch import MAX_IN_FLIGHT
from bot.pipeline.engine_client import EngineStartError
from bot.pipeline.engines import Engines, combined, resolve_devices
from core.devices import Devices, InvalidDevices
from tests.support.bots import answer, drawn_order, make_bot, results
from tests.support.fake_discord import OWNER_ID, USER_ID, FakeDiscord
from tests.support.fake_engine import FakeEngine


@pytest.mark.parametrize(
    ("text", "listed"),
    [
        ("auto", ("auto",)),
        ("cuda:0, cuda:1", ("cuda:0", "cuda:1")),
        ("CPU,cpu", ("cpu", "cpu")),
        ("cuda,cuda:1", ("cuda", "cuda:1")),
    ],
)
def test_a_list_of_devices_is_one_engine_each(text: str, listed: tuple[str, ...]) -> None:
    assert Devices.parse(text).listed == listed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("gpu", "takes auto, cpu, cuda, cuda:N or all"),
        ("cuda:0,", "has an empty entry"),
        ("cuda,cuda:0", "names a GPU twice"),
        ("auto,cpu", "names a GPU twice"),
        ("all,cuda:0", "takes all or none alone"),
        ("none,cpu", "takes all or none alone"),
        ("cuda:01", "takes auto, cpu, cuda, cuda:N or all"),
    ],
)
def test_unusable_devices_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(InvalidDevices, match=message):
        Devices.parse(text)


async def test_all_is_one_engine_per_gpu_counted_by_the_engine_side() -> None:
    assert Devices.parse("all").resolve(3) == ("cuda:0", "cuda:1", "cuda:2")
    # This machine has no GPU: the count comes from torch in a child process, and none is one line.
    with pytest.raises(EngineStartError, match="^SDBOT_DEVICE is all, but torch sees no CUDA GPU"):
        await resolve_devices(Devices.parse("all"))
    assert await resolve_devices(Devices.parse("cpu,cpu")) == ("cpu", "cpu")


async def test_a_job_may_ask_what_every_engine_can_draw() -> None:
    big = FakeEngine(max_pixels=4_000_000, max_batch=8, family_pixels={"sd1": 4_000_000, "sdxl": 2_000_000})
    small = FakeEngine(max_pixels=1_000_000, max_batch=2, family_pixels={"sd1": 1_000_000})
    engines = Engines([big, small])
    assert engines.ready is None
    stages: list[str] = []
    await engines.start(stages.append)
    assert stages == ["engine 1 of 2: loading the model", "engine 2 of 2: loading the model"]
    ready = engines.ready
    assert ready is not None and (ready.max_pixels, ready.max_batch) == (1_000_000, 2)
    assert ready.pixels_for("sd1") == 1_000_000 and ready.pixels_for("sdxl") == 1_000_000
    assert combined([big.ready]) == big.ready  # type: ignore[list-item]
    await engines.close()
    assert not big.started and not small.started


async def test_if_one_engine_cannot_start_the_others_are_stopped() -> None:
    class Broken(FakeEngine):
        async def start(self, on_starting: object = None) -> object:  # type: ignore[override]
            raise EngineStartError("SDBOT_DEVICE names cuda:3, but torch sees 2 CUDA GPUs")

    good = FakeEngine()
    with pytest.raises(EngineStartError, match="cuda:3"):
        await Engines([good, Broken()]).start()
    assert not good.started


@pytest.fixture
async def two(fake: FakeDiscord, tmp_path: Path) -> AsyncIterator[tuple[SdBot, FakeEngine, FakeEngine]]:
    first, second = FakeEngine(max_batch=1), FakeEngine(max_batch=4, max_pixels=8 * 512 * 512)
    async with fake.connected(make_bot(tmp_path, Engines([first, second]))) as bot:
        yield bot, first, second


async def imagine(fake: FakeDiscord, member: int, prompt: str) -> None:
    await (
        await fake.slash("imagine", {"prompt": prompt, "steps": 2, "seed": 1}, user_id=USER_ID + member)
    ).wait_response()


async def both_drawing(fake: FakeDiscord, first: FakeEngine, second: FakeEngine) -> None:
    """A job on each engine, held there until the test opens their gates."""
    first.gate.clear()
    second.gate.clear()
    await imagine(fake, 1, "one")
    await first.wait_calls(1)
    await imagine(fake, 2, "two")
    await second.wait_calls(1)


async def test_two_engines_draw_at_once_and_every_job_is_posted_once(
    fake: FakeDiscord, two: tuple[SdBot, FakeEngine, FakeEngine]
) -> None:
    _, first, second = two
    # Both are drawing before either is let go: one job each.
    await both_drawing(fake, first, second)
    first.gate.set()
    second.gate.set()
    posted = await fake.wait_for(lambda: results(fake) if len(results(fake)) == 2 else None)
    assert sorted(m.embeds[0]["description"] for m in posted) == ["one", "two"]
    assert (first.batches, second.batches) == ([[first.calls[0][0]]], [[second.calls[0][0]]])


async def test_each_batch_is_built_for_the_engine_that_takes_it(
    fake: FakeDiscord, two: tuple[SdBot, FakeEngine, FakeEngine]
) -> None:
    bot, first, second = two
    await both_drawing(fake, first, second)
    # Both engines busy: four more members wait in the queue.
    for member in range(3, 7):
        await imagine(fake, member, f"job {member}")
    await fake.wait_for(lambda: len(bot.queue) == 4 or None)
    # The engine of four images a batch is free first, and takes all four waiting at once; the other took one.
    second.gate.set()
    await fake.wait_for(lambda: len(second.batches) == 2 or None)
    assert [len(batch) for batch in second.batches] == [1, 4]
    first.gate.set()
    await fake.wait_for(lambda: len(results(fake)) == 6 or None)
    assert [len(batch) for batch in first.batches] == [1]


async def test_an_engine_holds_at_most_two_batches(fake: FakeDiscord, tmp_path: Path) -> None:
    engine = FakeEngine(max_batch=1)
    engine.results_gate.clear()
    async with fake.connected(make_bot(tmp_path, engine)) as bot:
        for member in range(1, 5):
            await imagine(fake, member, f"job {member}")
        # Denoised but not yet answered (as while PNGs are encoded): the next batch went in behind each.
        await fake.wait_for(
            lambda: len(engine.batches) == MAX_IN_FLIGHT and len(bot.queue) + MAX_IN_FLIGHT == 4 or None
        )
        assert [status.in_flight for status in bot.dispatcher.engine_statuses(0)] == [MAX_IN_FLIGHT]
        engine.results_gate.set()
        await fake.wait_for(lambda: len(results(fake)) == 4 or None)
    assert engine.most_in_flight == MAX_IN_FLIGHT and len(engine.batches) == 4


async def test_a_cancel_reaches_the_engine_drawing_the_job(
    fake: FakeDiscord, two: tuple[SdBot, FakeEngine, FakeEngine]
) -> None:
    bot, first, second = two
    await both_drawing(fake, first, second)
    job = await bot.store.get(second.calls[0][0])
    assert job is not None
    assert await bot.dispatcher.cancel(job, USER_ID + 2) == "Stopping it after the current step."
    assert (first.cancelled, second.cancelled) == (set(), {job.id})
    first.gate.set()
    second.gate.set()
    (posted,) = await fake.wait_for(lambda: results(fake) or None)
    assert posted.embeds[0]["description"] == "one"


async def test_the_bots_owners_see_each_engine(fake: FakeDiscord, two: tuple[SdBot, FakeEngine, FakeEngine]) -> None:
    _, first, second = two
    second.gate.clear()
    await imagine(fake, 1, "one")
    await fake.wait_for(lambda: len(results(fake)) == 1 or None)
    await imagine(fake, 2, "two")
    await second.wait_calls(1)
    text = await answer(await fake.slash("sdadmin", {}, subcommand="workers", user_id=OWNER_ID))
    heading, engine_1, engine_2 = text.splitlines()
    assert heading.startswith("**Engines** (2; the local ones on `")
    assert engine_1.startswith("**1.** `fake` — `fake-model` · 0 batches in flight · 0.1 images/min · 1 images ·")
    assert engine_2.startswith("**2.** `fake` — `fake-model` · 1 batches in flight · 0.0 images/min · 0 images ·")
    assert engine_1.endswith(" · 0 restarts") and "last batch <t:" in engine_1
    # An admin of the server who does not own the bot is told who does.
    manage_server = 32
    admin = await fake.slash("sdadmin", {}, subcommand="workers", user_id=USER_ID + 7, member_permissions=manage_server)
    refused = await answer(admin)
    assert refused.startswith("Only ") and "see the engines" in refused
    second.gate.set()
    await fake.wait_for(lambda: len(results(fake)) == 2 or None)


async def fair_order(fake: FakeDiscord, folder: Path, engines: list[FakeEngine]) -> list[str]:
    folder.mkdir()
    async with fake.connected(make_bot(folder, Engines(engines))) as bot:
        order = await drawn_order(fake, bot)
    assert all(engine.most_in_flight <= MAX_IN_FLIGHT for engine in engines)
    return order


async def test_fifty_jobs_on_three_engines_keep_the_fair_order_of_one(tmp_path: Path) -> None:
    async with FakeDiscord() as fake:
        alone = await fair_order(fake, tmp_path / "one", [FakeEngine(max_batch=4)])
    async with FakeDiscord() as fake:
        three = [FakeEngine(max_batch=4) for _ in range(3)]
        shared = await fair_order(fake, tmp_path / "three", three)
    assert sorted(shared) == sorted(alone) and len(alone) == 50, "every job drawn once"
    # The same fair queue feeds them: each job leaves it within one batch of where it would with one engine.
    assert max(abs(shared.index(prompt) - alone.index(prompt)) for prompt in alone) <= 4
    assert all(engine.batches for engine in three), "every engine drew"
