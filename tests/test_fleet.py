"""Engines on other machines, through a real redis-server: workers join and die, Redis dies, frames lie; nothing is
lost or posted twice."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from redis.asyncio import Redis

from bot.app import SdBot
from bot.fleet import hub as hub_module
from bot.fleet.remote_engine import RemoteEngine
from bot.fleet.streams import GROUP, REMOTE_MODELS, RESULTS, BadEntry, WorkerCard, outcome_fields, worker_key
from bot.models.picker import Models
from bot.pipeline.dispatch import MAX_IN_FLIGHT
from bot.pipeline.engine_client import EngineCrashed
from bot.pipeline.engines import Engines
from bot.pipeline.retries import ENGINE_CRASHED
from bot.results.render import WORKERS_UNREACHABLE
from core.catalog import Catalog, CatalogEntry, scan
from core.checkpoint_header import Family
from core.jobs import JobState
from core.network_files import NetworkFolder
from core.params import GenerationParams
from core.sidecar import ModelDefaults
from core.upscaler_files import UpscalerFolder
from core.vae_files import VaeFamily, VaeFolder
from core.wire import EngineReady, Progress, encode
from tests.support.bots import answer, autocomplete, drawn_order, make_bot, results
from tests.support.checkpoint_headers import SD1_KEYS, write_header_only
from tests.support.fake_discord import CHANNEL_ID, OWNER_ID, USER_ID, FakeDiscord
from tests.support.fake_engine import MODEL, FakeEngine
from tests.support.fleet import POLL, TTL, RunningWorker, start_worker
from tests.support.redis_server import RedisServer
from tests.support.tiny_esrgan import write_tiny_esrgan
from tests.support.tiny_model import build_tiny_vae
from tests.test_buttons_e2e import job_id_of
from tests.test_vae_files import save_vae


def remote_bot(folder: Path, url: str, local: list[FakeEngine] | None = None) -> SdBot:
    """A bot with no engine of its own (SDBOT_DEVICE=none) unless `local` ones, fed by the workers on `url`."""
    folder.mkdir(exist_ok=True)
    return make_bot(folder, Engines(local or []), redis_url=url, fleet_poll=POLL)


async def imagine(fake: FakeDiscord, member: int, prompt: str, steps: int = 2) -> str:
    inter = await fake.slash("imagine", {"prompt": prompt, "steps": steps, "seed": 1}, user_id=USER_ID + member)
    return await answer(inter)


async def workers_joined(fake: FakeDiscord, bot: SdBot, count: int) -> None:
    await fake.wait_for(lambda: len(bot.engines.members) == count or None)


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def test_a_worker_draws_for_a_bot_without_engines(
    fake: FakeDiscord, redis_server: RedisServer, tmp_path: Path
) -> None:
    worker = await start_worker(redis_server.url, "gpu-box-1")
    async with fake.connected(remote_bot(tmp_path, redis_server.url)) as bot:
        await workers_joined(fake, bot, 1)
        await imagine(fake, 1, "a lighthouse")
        posted = await fake.wait_for(lambda: results(fake) or None)
        assert posted[0].embeds[0]["description"] == "a lighthouse"
        assert len(worker.engine.calls) == 1
        text = await answer(await fake.slash("sdadmin", {}, subcommand="workers", user_id=OWNER_ID))
        heading, line = text.splitlines()
        assert heading.startswith("**Engines** (1;")
        assert line.startswith("**1.** `gpu-box-1` `fake` — `fake-model` · 0 batches in flight ·")
        assert "heartbeat <t:" in line
    await worker.leave()


async def test_fifty_jobs_from_ten_members_on_three_workers_keep_the_fair_order_of_one_engine(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    async with FakeDiscord() as fake:
        (tmp_path / "one").mkdir()
        async with fake.connected(make_bot(tmp_path / "one", FakeEngine(max_batch=4))) as bot:
            alone = await drawn_order(fake, bot)
    workers = [await start_worker(redis_server.url, f"w{n}", FakeEngine(max_batch=4)) for n in range(3)]
    async with FakeDiscord() as fake:
        async with fake.connected(remote_bot(tmp_path / "three", redis_server.url)) as bot:
            await workers_joined(fake, bot, 3)
            shared = await drawn_order(fake, bot)
            # Each result once: the results stream is empty, every entry acknowledged after the job log had it.
            await fake.wait_for(lambda: not bot.hub._held or None)  # type: ignore[union-attr]
    assert sorted(shared) == sorted(alone) and len(alone) == 50, "every job drawn once"
    assert max(abs(shared.index(prompt) - alone.index(prompt)) for prompt in alone) <= 4
    assert all(worker.engine.batches for worker in workers), "every worker drew"
    assert all(worker.engine.most_in_flight <= MAX_IN_FLIGHT for worker in workers)
    client = Redis.from_url(redis_server.url)
    assert await client.xlen(RESULTS) == 0
    await client.aclose()
    for worker in workers:
        await worker.leave()


class SlowEngine(FakeEngine):
    """A GPU `factor` times slower than the others: each batch takes that many ticks of the shared clock."""

    def __init__(self, seconds: float) -> None:
        super().__init__(max_batch=2)
        self.seconds = seconds

    async def generate_batch(self, requests, on_progress):  # type: ignore[no-untyped-def]
        # Simulated GPU time: the batch occupies this engine for its duration, as a real denoising loop would.
        await asyncio.sleep(self.seconds)
        return await super().generate_batch(requests, on_progress)


async def test_a_worker_three_times_slower_takes_proportionally_fewer_batches(
    fake: FakeDiscord, redis_server: RedisServer, tmp_path: Path
) -> None:
    fast = [await start_worker(redis_server.url, f"fast{n}", SlowEngine(0.1)) for n in range(2)]
    slow = await start_worker(redis_server.url, "slow", SlowEngine(0.3))
    async with fake.connected(remote_bot(tmp_path, redis_server.url)) as bot:
        await workers_joined(fake, bot, 3)
        await bot.queue.pause()
        for job in range(60):
            await imagine(fake, job % 12, f"job {job}")
        await bot.queue.resume()
        await fake.wait_for(lambda: len(results(fake)) == 60 or None, timeout=60)
    batches = [len(worker.engine.batches) for worker in fast]
    # The ideal share is 1/7 of the batches (rates 1, 1 and 1/3); it must be well under the fast ones' third each.
    assert len(slow.engine.batches) / (sum(batches) + len(slow.engine.batches)) < 0.25
    assert all(len(slow.engine.batches) < count for count in batches)
    for worker in [*fast, slow]:
        await worker.leave()


async def held_on(fake: FakeDiscord, worker: RunningWorker, member: int, prompt: str) -> None:
    """A job that `worker` has begun (one step drawn) and holds there."""
    worker.engine.hold_after_step = 1
    await imagine(fake, member, prompt, steps=4)
    await asyncio.wait_for(worker.engine.holding.wait(), 10)


async def attempts(bot: SdBot) -> list[int]:
    rows = await bot.database.db.execute_fetchall("SELECT attempts FROM jobs")
    return [int(row[0]) for row in rows]


async def test_a_dead_workers_batch_is_drawn_again_on_another_engine(
    fake: FakeDiscord, redis_server: RedisServer, tmp_path: Path
) -> None:
    first = await start_worker(redis_server.url, "first")
    async with fake.connected(remote_bot(tmp_path, redis_server.url)) as bot:
        await workers_joined(fake, bot, 1)
        await held_on(fake, first, 1, "a harbour")
        second = await start_worker(redis_server.url, "second")
        await workers_joined(fake, bot, 2)
        await first.die()
        # Declared dead when its heartbeat key expires: its job goes to the other worker, and is posted once.
        posted = await fake.wait_for(lambda: results(fake) or None, timeout=10)
        assert [m.embeds[0]["description"] for m in posted] == ["a harbour"]
        assert [engine.host for engine in bot.engines.members] == ["second"]
        # The dead worker was drawing it: that attempt counts, and so does the second one.
        assert await attempts(bot) == [2]
        assert not await Redis.from_url(redis_server.url).exists(worker_key("first"))
    await second.leave()


async def test_a_job_that_kills_two_workers_is_failed_with_a_sentence(
    fake: FakeDiscord, redis_server: RedisServer, tmp_path: Path
) -> None:
    first = await start_worker(redis_server.url, "first")
    async with fake.connected(remote_bot(tmp_path, redis_server.url)) as bot:
        await workers_joined(fake, bot, 1)
        await held_on(fake, first, 1, "the cursed prompt")
        second = await start_worker(redis_server.url, "second")
        second.engine.hold_after_step = 1
        await workers_joined(fake, bot, 2)
        await first.die()
        await asyncio.wait_for(second.engine.holding.wait(), 10)
        third = await start_worker(redis_server.url, "third")
        await workers_joined(fake, bot, 2)
        await second.die()
        failure = await fake.wait_for(
            lambda: [m for m in fake.messages(CHANNEL_ID) if ENGINE_CRASHED in m.content] or None, timeout=10
        )
        assert len(failure) == 1
        assert third.engine.calls == [], "given up, not handed to a third worker"
        assert await attempts(bot) == [3]
    await third.leave()


async def eventually(check: Callable[[], Awaitable[bool] | bool], timeout: float = 10.0) -> None:
    """Until `check` holds (it asks Redis, which has no event to wait on)."""

    async def holds() -> None:
        while not await _value(check()):
            await asyncio.sleep(POLL)

    await asyncio.wait_for(holds(), timeout)


async def _value(outcome: Awaitable[bool] | bool) -> bool:
    return await outcome if inspect.isawaitable(outcome) else outcome


async def stream_empty(url: str) -> None:
    """Until every result entry has been acknowledged and let go of."""
    client = Redis.from_url(url)

    async def empty() -> bool:
        return await client.xlen(RESULTS) == 0

    try:
        await eventually(empty)
    finally:
        await client.aclose()


async def test_a_partitioned_worker_that_comes_back_late_has_its_result_dropped(
    fake: FakeDiscord, redis_server: RedisServer, tmp_path: Path
) -> None:
    first = await start_worker(redis_server.url, "first")
    async with fake.connected(remote_bot(tmp_path, redis_server.url)) as bot:
        await workers_joined(fake, bot, 1)
        await held_on(fake, first, 1, "a lighthouse")
        second = await start_worker(redis_server.url, "second")
        await workers_joined(fake, bot, 2)
        first.lose_heartbeat()
        await fake.wait_for(lambda: results(fake) or None, timeout=10)
        # The first worker was only cut off: it finishes, and posts its result after the job was delivered.
        first.engine.go_on.set()
        await eventually(lambda: not first.worker._batches)
        await stream_empty(redis_server.url)
        assert [m.embeds[0]["description"] for m in results(fake)] == ["a lighthouse"]
        assert len(first.engine.calls) == len(second.engine.calls) == 1
    await first.leave()
    await second.leave()


async def test_a_result_read_but_not_recorded_when_the_bot_died_is_posted_once_after_its_restart(
    fake: FakeDiscord, redis_server: RedisServer, tmp_path: Path
) -> None:
    worker = await start_worker(redis_server.url, "w")
    client = Redis.from_url(redis_server.url)
    first = remote_bot(tmp_path, redis_server.url)
    async with fake.connected(first):
        await workers_joined(fake, first, 1)
        dying = asyncio.Event()

        async def never_recorded(*args: object) -> None:
            # The bot is killed here: it has read the result from Redis, but the job log never gets it.
            await dying.wait()

        first.store.mark_done = never_recorded  # type: ignore[method-assign,assignment]
        await imagine(fake, 1, "a harbour at dawn")
        await eventually(lambda: one_pending(client))
    assert results(fake) == []
    async with fake.connected(remote_bot(tmp_path, redis_server.url)) as bot:
        posted = await fake.wait_for(lambda: results(fake) or None)
        await stream_empty(redis_server.url)
        assert [m.embeds[0]["description"] for m in posted] == ["a harbour at dawn"]
        assert [job.state for job in await bot.store.in_states(JobState.QUEUED, JobState.RUNNING)] == []
    assert len(worker.engine.calls) == 1, "posted from the result, not drawn again"
    await client.aclose()
    await worker.leave()


async def one_pending(client: Redis) -> bool:
    """Whether the bot has read one result it has not acknowledged."""
    return (await client.xpending(RESULTS, GROUP))["pending"] == 1


async def test_redis_killed_and_restarted_on_its_data_loses_nothing_and_posts_nothing_twice(
    fake: FakeDiscord, redis_server: RedisServer, tmp_path: Path
) -> None:
    worker = await start_worker(redis_server.url, "w")
    async with fake.connected(remote_bot(tmp_path, redis_server.url)) as bot:
        await workers_joined(fake, bot, 1)
        worker.engine.results_gate.clear()
        await imagine(fake, 1, "drawn across the crash")
        await worker.engine.wait_calls(1)
        redis_server.kill()
        redis_server.start()
        worker.engine.results_gate.set()
        await imagine(fake, 2, "asked after the crash")
        posted = await fake.wait_for(lambda: results(fake) if len(results(fake)) == 2 else None, timeout=20)
        await stream_empty(redis_server.url)
        assert sorted(m.embeds[0]["description"] for m in posted) == ["asked after the crash", "drawn across the crash"]
        # A batch sent on a connection the crash had broken may have reached the worker although the bot saw an
        # error (Redis applied the XADD, the reply was lost): it is sent again, and drawn twice, but posted once.
        drawn = {params.prompt for _, params in worker.engine.calls}
        assert drawn == {"asked after the crash", "drawn across the crash"}
    await worker.leave()


async def test_while_redis_is_down_longer_than_the_heartbeat_jobs_wait_and_no_worker_is_declared_dead(
    fake: FakeDiscord, redis_server: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    worker = await start_worker(redis_server.url, "w")
    async with fake.connected(remote_bot(tmp_path, redis_server.url)) as bot:
        await workers_joined(fake, bot, 1)
        engine = bot.engines.members[0]
        worker.engine.results_gate.clear()
        await imagine(fake, 1, "drawn while Redis is away")
        await worker.engine.wait_calls(1)
        redis_server.kill()
        # The member whose job the worker holds is told, and so is one who asks now.
        await fake.wait_for(lambda: [m for m in fake.messages(CHANNEL_ID) if WORKERS_UNREACHABLE in m.content] or None)
        assert await imagine(fake, 2, "asked while Redis is away") == WORKERS_UNREACHABLE
        # The outage outlasts the workers' heartbeat time-to-live.
        await asyncio.sleep(TTL * 1.5)
        redis_server.start()
        worker.engine.results_gate.set()
        posted = await fake.wait_for(lambda: results(fake) if len(results(fake)) == 2 else None, timeout=20)
        assert sorted(m.embeds[0]["description"] for m in posted) == [
            "asked while Redis is away",
            "drawn while Redis is away",
        ]
        assert bot.engines.members == (engine,), "the same worker, never declared dead"
    assert "is dead" not in caplog.text
    await worker.leave()


async def test_frames_for_jobs_a_worker_was_not_given_and_oversized_frames_are_refused(
    fake: FakeDiscord,
    redis_server: RedisServer,
    redis: Redis,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(hub_module, "MAX_RESULT_BYTES", 64 * 1024)
    worker = await start_worker(redis_server.url, "honest")
    worker.engine.gate.clear()
    async with fake.connected(remote_bot(tmp_path, redis_server.url)) as bot:
        await workers_joined(fake, bot, 1)
        await imagine(fake, 1, "the real one")
        await worker.engine.wait_calls(1)
        job = (await bot.store.in_states(JobState.RUNNING))[0]
        forged = await FakeEngine().generate(job.id, job.params, lambda _: None)
        frame = encode(forged)
        await redis.xadd(RESULTS, outcome_fields("mallory", "a-guessed-batch", frame))  # type: ignore[arg-type]
        await redis.xadd(RESULTS, outcome_fields("honest", "a-guessed-batch", frame))  # type: ignore[arg-type]
        await redis.xadd(RESULTS, outcome_fields("honest", "garbled", b"\x00\x00\x00\x05junk!"))  # type: ignore[arg-type]
        await redis.xadd(RESULTS, outcome_fields("honest", "huge", b"x" * 65 * 1024))  # type: ignore[arg-type]
        await redis.xadd(RESULTS, {"kind": "batch", "worker": "honest", "batch": "b", "frame": frame})  # type: ignore[arg-type]
        await stream_empty(redis_server.url)
        assert results(fake) == [], "nothing delivered from a frame that answers no batch of its worker"
        assert caplog.text.count("dropped a result for job") == 2
        assert caplog.text.count("refused entry") == 3
        worker.engine.gate.set()
        posted = await fake.wait_for(lambda: results(fake) or None)
        assert [m.embeds[0]["description"] for m in posted] == ["the real one"]
    await worker.leave()


async def test_a_cancel_reaches_a_remote_worker_between_two_steps(
    fake: FakeDiscord, redis_server: RedisServer, tmp_path: Path
) -> None:
    worker = await start_worker(redis_server.url, "w")
    async with fake.connected(remote_bot(tmp_path, redis_server.url)) as bot:
        await workers_joined(fake, bot, 1)
        await held_on(fake, worker, 1, "changed my mind")
        job = (await bot.store.in_states(JobState.RUNNING))[0]
        assert await bot.dispatcher.cancel(job, USER_ID + 1) == "Stopping it after the current step."
        await eventually(lambda: job.id in worker.engine.cancelled)
        worker.engine.go_on.set()
        await fake.wait_for(lambda: [m for m in fake.messages(CHANNEL_ID) if "Cancelled" in m.content] or None)
        stored = await bot.store.get(job.id)
        assert stored is not None and stored.state is JobState.CANCELLED
        assert results(fake) == []
    await worker.leave()


async def choices(fake: FakeDiscord, typed: str) -> list[str]:
    return [choice["name"] for choice in await autocomplete(fake, "imagine", {"prompt": "x", "model": typed}, "model")]


async def test_imagine_offers_the_models_and_loras_a_worker_has_and_sends_their_jobs_only_to_it(
    fake: FakeDiscord, redis_server: RedisServer, tmp_path: Path
) -> None:
    dreamy = CatalogEntry(
        "dreamshaper_8",
        Path("/srv/models/dreamshaper_8.safetensors"),
        Family.SD1,
        512,
        ModelDefaults(steps=3, description="dreamy"),
    )
    (tmp_path / "worker-loras" / "styles").mkdir(parents=True)
    (tmp_path / "worker-loras" / "styles" / "pixel_art.safetensors").write_bytes(b"")
    worker = await start_worker(
        redis_server.url,
        "w",
        models=Models(catalog=Catalog({dreamy.name: dreamy})),
        loras=NetworkFolder(tmp_path / "worker-loras"),
    )
    local = FakeEngine()
    bot = remote_bot(tmp_path, redis_server.url, [local])
    # As the bot's own engine process: it draws what the bot's folders hold, and they have no dreamshaper nor LoRA.
    local.draws = lambda params: bot.models.has_locally(params.model) and bot.shared.loras.local_has(params)  # type: ignore[method-assign]
    async with fake.connected(bot):
        await workers_joined(fake, bot, 2)
        await imagine(fake, 5, "a castle <lora:pixel_art:0.8>")
        await fake.wait_for(lambda: results(fake) or None)
        assert local.calls == [] and [params.prompt for _, params in worker.engine.calls] == [
            "a castle <lora:pixel_art:0.8>"
        ]
        assert await choices(fake, "dream") == ["dreamshaper_8 — dreamy"]
        for member in range(4):
            inter = await fake.slash(
                "imagine", {"prompt": f"dream {member}", "model": "dreamshaper_8"}, user_id=USER_ID + member
            )
            await inter.wait_response()
        await fake.wait_for(lambda: len(results(fake)) == 5 or None)
        assert local.calls == [] and len(worker.engine.calls) == 5
        # The sidecar's defaults came with the card: 3 steps.
        assert {params.steps for _, params in worker.engine.calls[1:]} == {3}
        await worker.die()
        await workers_joined(fake, bot, 1)
        assert await choices(fake, "dream") == []
        refused = await imagine_with(fake, {"prompt": "dream on", "model": "dreamshaper_8"})
        assert refused.startswith("There is no model called `dreamshaper_8`")
        refused = await imagine_with(fake, {"prompt": "a castle <lora:pixel_art:0.8>"})
        assert refused.startswith("This bot has no LoRAs installed")


async def imagine_with(fake: FakeDiscord, options: dict[str, object]) -> str:
    return await answer(await fake.slash("imagine", options, user_id=USER_ID))


class CrashingOnce(FakeEngine):
    """An engine process that dies drawing its first batch (after a step), and is started again for the next."""

    async def generate_batch(self, requests, on_progress):  # type: ignore[no-untyped-def]
        if not self.batches:
            self.batches.append([request.job_id for request in requests])
            on_progress(Progress(requests[0].job_id, 1, requests[0].params.steps))
            raise EngineCrashed("the engine process exited with code -9")
        return await super().generate_batch(requests, on_progress)


async def test_a_workers_engine_that_dies_drawing_is_started_again_and_the_job_drawn_there(
    fake: FakeDiscord, redis_server: RedisServer, tmp_path: Path
) -> None:
    worker = await start_worker(redis_server.url, "w", CrashingOnce())
    async with fake.connected(remote_bot(tmp_path, redis_server.url)) as bot:
        await workers_joined(fake, bot, 1)
        await imagine(fake, 1, "drawn on the second try")
        posted = await fake.wait_for(lambda: results(fake) or None)
        assert [m.embeds[0]["description"] for m in posted] == ["drawn on the second try"]
        assert len(worker.engine.batches) == 2, "the worker said which job it was drawing; the bot sent it again"
        # It was drawing when the engine died: that attempt counts.
        assert await attempts(bot) == [2]
    await worker.leave()


async def test_a_model_rescan_reaches_the_workers_and_what_they_now_have_is_offered(
    fake: FakeDiscord, redis_server: RedisServer, tmp_path: Path
) -> None:
    folder = tmp_path / "worker-models"
    folder.mkdir()
    worker = await start_worker(redis_server.url, "w", models=Models(folder=folder))
    async with fake.connected(remote_bot(tmp_path, redis_server.url)) as bot:
        await workers_joined(fake, bot, 1)
        assert await choices(fake, "real") == []
        write_header_only(folder / "realisticVision_v51.safetensors", SD1_KEYS)
        reply = await answer(await fake.slash("sdadmin", {}, subcommand="models reload", user_id=OWNER_ID))
        assert reply.startswith("Rescanned the models folder")
        await eventually(lambda: worker.engine.reloads == 1)
        await eventually(lambda: bool(bot.models.catalog.get("realisticVision_v51")))
        assert await choices(fake, "real") == ["realisticVision_v51"]
    await worker.leave()


async def test_upscalers_and_vaes_only_a_worker_has_are_offered_and_their_jobs_go_only_to_it(
    fake: FakeDiscord, redis_server: RedisServer, tmp_path: Path
) -> None:
    write_tiny_esrgan(tmp_path / "worker-upscalers" / "4x-UltraSharp.safetensors", scale=4)
    torch.manual_seed(0)
    save_vae(build_tiny_vae(), tmp_path / "worker-vae" / "vae-ft-mse.safetensors")
    sdxl_vae = {"modelspec.architecture": "stable-diffusion-xl-v1-base/vae"}
    save_vae(build_tiny_vae(), tmp_path / "worker-vae" / "sdxl_vae.safetensors", sdxl_vae)
    xl = CatalogEntry(
        "juggernautXL", Path("/srv/models/juggernautXL.safetensors"), Family.SDXL, 1024, vae="jugg.vae.pt"
    )
    worker = await start_worker(
        redis_server.url,
        "w",
        models=Models(catalog=Catalog({xl.name: xl})),
        upscalers=UpscalerFolder(tmp_path / "worker-upscalers"),
        vaes=VaeFolder(tmp_path / "worker-vae"),
    )
    local = FakeEngine()
    # The bot's default model is an SD 1.x checkpoint of its own folder.
    write_header_only(tmp_path / "models" / "plain.safetensors", SD1_KEYS)
    models = Models(catalog=scan(tmp_path / "models"), default_location=str(tmp_path / "models" / "plain.safetensors"))
    bot = make_bot(tmp_path, Engines([local]), redis_url=redis_server.url, fleet_poll=POLL, models=models)
    # As the bot's own engine process: it draws what the bot's folders hold, which have no upscaler nor VAE.
    local.draws = lambda params: bot.shared.files.local_has(params) and bot.models.has_locally(params.model)  # type: ignore[method-assign]
    async with fake.connected(bot):
        await workers_joined(fake, bot, 2)
        text = await answer(await fake.slash("sdadmin", {}, subcommand="upscaler", user_id=OWNER_ID))
        assert text.startswith("The U button runs **4x-UltraSharp** here (the default)")
        text = await answer(await fake.slash("sdadmin", {}, subcommand="vae", user_id=OWNER_ID))
        assert "`sdxl_vae.safetensors`" in text and "`vae-ft-mse.safetensors`" in text
        inter = await fake.slash("sdadmin", {"default": "vae-ft-mse.safetensors"}, subcommand="vae", user_id=OWNER_ID)
        assert await answer(inter) == "Models that name no VAE now decode with **vae-ft-mse.safetensors** here."
        # The bot's default model is SD 1.5-sized: the worker's SD VAE fits it, and only the worker has it.
        await imagine(fake, 1, "a lighthouse")
        (grid,) = await fake.wait_for(lambda: results(fake) or None)
        assert local.calls == [] and [p.vae for _, p in worker.engine.calls] == ["vae-ft-mse.safetensors"]
        press = await fake.press(grid, f"sdbot:upscale:{job_id_of(grid)}:1", user_id=USER_ID)
        await press.wait_response()
        await fake.wait_for(lambda: len(worker.engine.calls) == 2 or None)
        assert local.calls == [] and worker.engine.calls[-1][1].upscaler == "4x-UltraSharp"
        # The worker's SDXL model keeps the VAE beside it, which the card named: the server's SD pick is not used.
        await imagine_with(fake, {"prompt": "a castle", "model": "juggernautXL"})
        await fake.wait_for(lambda: len(worker.engine.calls) == 3 or None)
        assert worker.engine.calls[-1][1].vae == "jugg.vae.pt"
        await worker.die()
        await workers_joined(fake, bot, 1)
        text = await answer(await fake.slash("sdadmin", {}, subcommand="upscaler", user_id=OWNER_ID))
        assert text.startswith("The U button runs **Lanczos** here (the default)")
        await imagine(fake, 2, "a harbour")
        await fake.wait_for(lambda: local.calls or None)
        assert local.calls[-1][1].vae == "", "the picked VAE went with its worker: the model's own decodes"


def test_a_workers_card_carries_its_files_and_its_engines_take_only_jobs_it_has_them_for() -> None:
    xl = CatalogEntry("juggernautXL", Path("/srv/juggernautXL.safetensors"), Family.SDXL, 1024, vae="jugg.vae.pt")
    ready = EngineReady(model=MODEL, device="cuda:0", native_width=512, native_height=512, max_pixels=2**20)
    card = WorkerCard(
        "w",
        "gpu-box",
        (ready,),
        2.0,
        models=(xl,),
        upscalers=frozenset({"4x-UltraSharp"}),
        vaes={"vae-ft-mse.safetensors": VaeFamily.SD, "mystery.safetensors": None},
    )
    read = WorkerCard.from_json(card.to_json())
    assert read == replace(card, models=(replace(xl, path=REMOTE_MODELS / xl.name),))
    assert read.vae_names == {"vae-ft-mse.safetensors", "mystery.safetensors", "jugg.vae.pt"}
    engine = RemoteEngine(Redis.from_url("redis://127.0.0.1:1"), read, 0)
    job = GenerationParams(prompt="a fox", width=64, height=64)
    assert engine.draws(job) and engine.draws(replace(job, model="juggernautXL", vae="jugg.vae.pt"))
    assert engine.draws(job.upscaled((64, 64), seed=1, upscaler="4x-UltraSharp"))
    assert not engine.draws(job.upscaled((64, 64), seed=1, upscaler="RealESRGAN_x4plus"))
    assert engine.draws(replace(job, hires=2.0, hires_upscaler="4x-UltraSharp"))
    assert engine.draws(replace(job, hires=2.0, hires_upscaler="Latent"))
    assert not engine.draws(replace(job, hires=2.0, hires_upscaler="SwinIR_4x"))
    assert not engine.draws(replace(job, vae="kl-f8-anime2.safetensors"))
    for bad in ({"vaes": {"x.safetensors": "sd3"}}, {"vaes": ["x.safetensors"]}, {"upscalers": [""]}):
        with pytest.raises(BadEntry, match="unreadable worker card"):
            WorkerCard.from_json(json.dumps({**json.loads(card.to_json()), **bad}))


async def test_a_read_that_never_sees_its_cancel_keeps_neither_the_hub_nor_the_bot_from_stopping(
    fake: FakeDiscord, redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hub_module, "STOP_WAIT_S", 0.2)
    released = asyncio.Event()

    async def stubborn(self: hub_module.Hub) -> None:
        # As a read blocked on a connection that does not notice its cancel (until the test lets it go).
        while not released.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(3600)

    monkeypatch.setattr(hub_module.Hub, "_read_progress", stubborn)
    bot = remote_bot(tmp_path, redis_server.url)
    async with fake.connected(bot):
        await eventually(lambda: bot.hub is not None and bot.hub.connected)
        await asyncio.wait_for(bot.close(), 10)
    released.set()
    for task in asyncio.all_tasks():
        if task.get_name() == "fleet-progress":
            task.cancel()
            await asyncio.wait({task}, timeout=5)
