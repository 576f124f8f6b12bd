"""The bot as a service, in a process of its own: SIGKILL with jobs queued, SIGTERM with one running, and
systemd's notify protocol. The fake Discord runs in the test; the bot runs `sdbot` via tests.support.run_bot."""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.systemd import notify
from tests.support.bots import results
from tests.support.fake_discord import GUILD_ID, OWNER_ID, USER_ID, FakeDiscord

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "MTA1NjQ3ODk0NTYxMjM0NTY3OA.GabcDe.abcdefghijklmnopqrstuvwxyz0123456789AB"
MEMBERS = (USER_ID, USER_ID + 5, USER_ID + 6)


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(token=TOKEN) as fake:
        yield fake


async def start_bot(
    fake: FakeDiscord, folder: Path, model: Path, extra: dict[str, str] | None = None
) -> asyncio.subprocess.Process:
    """`sdbot` with its settings in the environment, as systemd's EnvironmentFile would give them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SDBOT_", "DISCORD_", "NOTIFY_", "WATCHDOG_"))}
    env.update(
        DISCORD_TOKEN=TOKEN,
        SDBOT_MODEL=str(model),
        SDBOT_DEVICE="cpu",
        SDBOT_DB=str(folder / "sdbot.sqlite3"),
        SDBOT_DATA_DIR=str(folder / "data"),
        SDBOT_GUILD_IDS=str(GUILD_ID),
        SDBOT_COOLDOWN_S="0",
        **(extra or {}),
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.support.run_bot", fake.base_url, fake.gateway_url, cwd=ROOT, env=env
    )
    identified = fake.identifies
    await fake.wait_for(lambda: fake.identifies > identified or process.returncode is not None, timeout=90)
    assert process.returncode is None, "the bot exited before connecting"
    await fake.wait_ready(timeout=30)
    return process


def states(folder: Path) -> list[str]:
    with sqlite3.connect(folder / "sdbot.sqlite3") as db:
        return sorted(state for (state,) in db.execute("SELECT state FROM jobs"))


async def test_killed_with_jobs_queued_every_image_arrives_exactly_once(
    fake: FakeDiscord, tiny_model_dir: Path, tmp_path: Path
) -> None:
    bot = await start_bot(fake, tmp_path, tiny_model_dir)
    pause = await fake.slash("sdadmin", {}, subcommand="pause", user_id=OWNER_ID)
    await pause.wait_response()
    for member in MEMBERS:
        await (await fake.slash("imagine", {"prompt": f"fox {member}", "steps": 2}, user_id=member)).wait_response()
    await fake.wait_for(lambda: states(tmp_path) == ["queued"] * 3, timeout=10)
    bot.kill()
    assert await bot.wait() == -9

    again = await start_bot(fake, tmp_path, tiny_model_dir)
    resume = await fake.slash("sdadmin", {}, subcommand="resume", user_id=OWNER_ID)
    answered = (await resume.wait_response()).data
    assert answered is not None and answered["content"] == "The queue runs again."
    assert results(fake) == [], "the pause outlived the kill"
    await fake.wait_for(lambda: len(results(fake)) == 3, timeout=60, what="the three results after the restart")
    again.terminate()
    assert await again.wait() == 0
    assert states(tmp_path) == ["delivered"] * 3
    assert sorted(m.content for m in results(fake)) == sorted(f"<@{member}>" for member in MEMBERS)


async def test_sigterm_lets_the_running_job_finish_and_exits_0_and_systemd_hears_of_it(
    fake: FakeDiscord, tiny_model_dir: Path, tmp_path: Path
) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(tmp_path / "notify"))
    listener.setblocking(False)
    loop = asyncio.get_running_loop()
    # Read as systemd does, all the time: the kernel queues only a few datagrams.
    notifications: asyncio.Queue[str] = asyncio.Queue()

    async def receive() -> None:
        while True:
            notifications.put_nowait((await loop.sock_recv(listener, 4096)).decode())

    async def next_notification() -> str:
        return await asyncio.wait_for(notifications.get(), 60)

    receiver = asyncio.create_task(receive())
    try:
        bot = await start_bot(
            fake, tmp_path, tiny_model_dir, {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "400000"}
        )
        seen: list[str] = []
        while not {"READY=1", "WATCHDOG=1"} <= set(seen):
            seen.append((await next_notification()).split("\n")[0])
        # The engine's start extends systemd's start timeout (each compile may take minutes) before READY.
        assert seen[0] == "EXTEND_TIMEOUT_USEC=600000000" and "READY=1" in seen[1:]
        inter = await fake.slash("imagine", {"prompt": "a slow fox", "steps": 80})
        await inter.wait_response()
        ack = inter.original
        assert ack is not None
        await fake.wait_for(lambda: "step" in ack.content, timeout=30, what="the job running")
        bot.terminate()
        while (message := await next_notification()) != "STOPPING=1":
            assert message == "WATCHDOG=1"
        assert await bot.wait() == 0
    finally:
        receiver.cancel()
        listener.close()
    (posted,) = results(fake)
    assert posted.content == f"<@{USER_ID}>" and states(tmp_path) == ["delivered"]


def test_notify_never_blocks_when_nobody_reads(tmp_path: Path) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(tmp_path / "notify"))
    try:
        environ = {"NOTIFY_SOCKET": str(tmp_path / "notify")}
        sent = [notify("WATCHDOG=1", environ) for _ in range(2000)]
        assert sent[0] and not all(sent), "the kernel's queue filled up, and the pings past it were dropped"
        assert listener.recv(64) == b"WATCHDOG=1"
    finally:
        listener.close()
