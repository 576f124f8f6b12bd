"""`sdbot worker` as an operator runs it: a real worker process with the tiny model serving a bot, and its one-line
refusals."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from redis.asyncio import Redis

from bot.fleet.streams import worker_key
from core.pngmeta import infotext_of
from tests.support.bots import make_bot, results
from tests.support.fake_discord import USER_ID, FakeDiscord
from tests.support.fake_engine import FakeEngine
from tests.support.fleet import POLL, start_worker
from tests.support.redis_server import RedisServer, free_port
from tests.test_fleet import eventually, remote_bot


def worker_env(model: Path, url: str, **more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SDBOT_", "DISCORD_"))}
    env.update(SDBOT_MODEL=str(model), SDBOT_DEVICE="cpu", SDBOT_REDIS_URL=url, **more)
    return env


def run_worker(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", "worker"], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_a_worker_that_cannot_reach_redis_says_so_in_one_line(tiny_model_dir: Path, tmp_path: Path) -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    done = run_worker(worker_env(tiny_model_dir, url), tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith(f"sdbot: SDBOT_REDIS_URL redis://:***@127.0.0.1:{url.rsplit(':', 1)[1]} cannot be")
    assert done.stderr.count("\n") == 1 and "hunter2" not in done.stderr


async def test_a_worker_named_as_a_live_one_is_refused(
    tiny_model_dir: Path, tmp_path: Path, redis_server: RedisServer
) -> None:
    # A live worker renews its heartbeat: the second one waits out the key's time-to-live, sees it renewed, and stops.
    twin = await start_worker(redis_server.url, "twin", ttl=1.0)
    env = worker_env(tiny_model_dir, redis_server.url, SDBOT_WORKER_NAME="twin")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "worker", cwd=tmp_path, env=env, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(process.communicate(), 60)
    await twin.leave()
    assert process.returncode == 2
    assert err.decode() == (
        "sdbot: SDBOT_WORKER_NAME twin is taken by a worker that is still running: give this one another name\n"
    )


async def test_a_worker_process_draws_with_the_tiny_model_for_a_bot_without_engines(
    tiny_model_dir: Path, tmp_path: Path, redis_server: RedisServer, fake: FakeDiscord
) -> None:
    env = worker_env(tiny_model_dir, redis_server.url, SDBOT_WORKER_NAME="tiny", SDBOT_HEARTBEAT_S="2")
    # The key of a worker of this name that died a moment ago (as systemd restarts it): it is waited out, not refused.
    client = Redis.from_url(redis_server.url)
    await client.set(worker_key("tiny"), "{}", px=1500)
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "bot", "worker", cwd=tmp_path, env=env)
    try:
        async with fake.connected(remote_bot(tmp_path / "bot", redis_server.url)) as bot:
            await fake.wait_for(lambda: bot.engines.members or None, timeout=120)
            assert bot.engines.members[0].host == "tiny"
            inter = await fake.slash("imagine", {"prompt": "a tiny fox", "steps": 2, "seed": 7}, user_id=USER_ID)
            await inter.wait_response()
            posted = await fake.wait_for(lambda: results(fake) or None, timeout=60)
            png = posted[0].attachments[0].data
            assert "a tiny fox" in infotext_of(png) and "Seed: 7" in infotext_of(png)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 60) == 0
        assert not await client.exists(worker_key("tiny")), "it signed off"
    finally:
        await client.aclose()
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_a_bot_that_cannot_reach_redis_serves_its_own_engines_and_keeps_trying(
    fake: FakeDiscord, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    bot = make_bot(tmp_path, FakeEngine(), redis_url=f"redis://127.0.0.1:{port}/0", fleet_poll=POLL)
    async with fake.connected(bot):
        inter = await fake.slash("imagine", {"prompt": "drawn here", "steps": 2}, user_id=USER_ID)
        await inter.wait_response()
        await fake.wait_for(lambda: results(fake) or None)
        assert bot.hub is not None and not bot.hub.connected
        (line,) = [r.getMessage() for r in caplog.records if "SDBOT_REDIS_URL" in r.getMessage()]
        assert line.startswith(f"SDBOT_REDIS_URL redis://127.0.0.1:{port}/0 cannot be reached (Error 111 connecting")
        assert line.endswith("): the remote engines wait; trying again every 0.1 s") and "\n" not in line
        server = RedisServer(tmp_path / "redis", port).start()
        try:
            await eventually(lambda: bot.hub is not None and bot.hub.connected)
        finally:
            server.stop()
