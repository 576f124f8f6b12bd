"""The bot as a service, in a process of its own: SIGKILL with jobs queued, SIGTERM with one running (to the bot
alone and to its whole process group), a missing GPU, systemd's notify protocol, and the engine process beside it
(below the bot's CPU priority, without its secrets, deaf to stop signals). The fake Discord runs in the test; the
bot runs `sdbot` via tests.support.run_bot."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest
import torch

from bot.pipeline.engine_client import EngineCommand, Outcome, ProcessEngine, ProgressCallback
from bot.systemd import notify
from core.params import GenerationParams
from core.wire import EngineReady, GenerateRequest, Progress
from tests.support.bots import make_bot, results
from tests.support.fake_discord import GUILD_ID, OWNER_ID, USER_ID, FakeDiscord

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "MTA1NjQ3ODk0NTYxMjM0NTY3OA.GabcDe.abcdefghijklmnopqrstuvwxyz0123456789AB"
MEMBERS = (USER_ID, USER_ID + 5, USER_ID + 6)


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(token=TOKEN) as fake:
        yield fake


def bot_environment(folder: Path, model: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """`sdbot`'s settings in the environment, as systemd's EnvironmentFile would give them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SDBOT_", "DISCORD_", "NOTIFY_", "WATCHDOG_"))}
    env.update(
        DISCORD_TOKEN=TOKEN,
        SDBOT_MODEL=str(model),
        SDBOT_DEVICE="cpu",
        SDBOT_DB=str(folder / "sdbot.sqlite3"),
        SDBOT_DATA_DIR=str(folder / "data"),
        SDBOT_GUILD_IDS=str(GUILD_ID),
        SDBOT_COOLDOWN_S="0",
    )
    env.update(extra or {})
    return env


async def spawn_bot(fake: FakeDiscord, env: dict[str, str], stderr: int | None = None) -> asyncio.subprocess.Process:
    """`sdbot` as a session and process group of its own, as a service or a terminal's foreground job runs it."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.run_bot",
        fake.base_url,
        fake.gateway_url,
        cwd=ROOT,
        env=env,
        stderr=stderr,
        start_new_session=True,
    )


async def start_bot(
    fake: FakeDiscord, folder: Path, model: Path, extra: dict[str, str] | None = None, stderr: int | None = None
) -> asyncio.subprocess.Process:
    """`sdbot` connected to the fake Discord (its log on `stderr`, a file descriptor, when given)."""
    process = await spawn_bot(fake, bot_environment(folder, model, extra), stderr)
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
        # A grace that outlasts the job even on a loaded 2-core machine (the default 30 s did not, once).
        environment = {
            "NOTIFY_SOCKET": str(tmp_path / "notify"),
            "WATCHDOG_USEC": "400000",
            "SDBOT_SHUTDOWN_GRACE_S": "120",
        }
        bot = await start_bot(fake, tmp_path, tiny_model_dir, environment)
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


async def test_sigterm_to_the_whole_process_group_lets_the_running_job_finish_on_the_same_engine(
    fake: FakeDiscord, tiny_model_dir: Path, tmp_path: Path
) -> None:
    # As a Ctrl-C in a terminal reaches the whole foreground group, or systemd's stop without KillMode=mixed.
    log = tmp_path / "sdbot.log"
    with log.open("wb") as stderr:
        # A grace that outlasts the job with the other test worker busy beside it; the bot exits when the job ends.
        bot = await start_bot(fake, tmp_path, tiny_model_dir, {"SDBOT_SHUTDOWN_GRACE_S": "120"}, stderr.fileno())
        inter = await fake.slash("imagine", {"prompt": "a slow fox", "steps": 100})
        await inter.wait_response()
        ack = inter.original
        assert ack is not None
        await fake.wait_for(lambda: "step" in ack.content, timeout=30, what="the job running")
        os.killpg(bot.pid, signal.SIGTERM)
        assert await asyncio.wait_for(bot.wait(), 150) == 0
    lines = log.read_text().splitlines()
    assert sum("engine ready" in line for line in lines) == 1, "the engine was started once: " + "\n".join(lines)
    assert not [line for line in lines if "exited with code" in line or "starting it again" in line]
    (posted,) = results(fake)
    assert posted.content == f"<@{USER_ID}>" and states(tmp_path) == ["delivered"]


async def refused_at_start(fake: FakeDiscord, folder: Path, model: Path, device: str) -> str:
    """Start `sdbot` with SDBOT_DEVICE=`device`, which it must refuse: exit code 2, nothing dumped; the last line."""
    bot = await spawn_bot(fake, bot_environment(folder, model, {"SDBOT_DEVICE": device}), asyncio.subprocess.PIPE)
    _, stderr = await asyncio.wait_for(bot.communicate(), 90)
    log = stderr.decode()
    assert bot.returncode == 2, log
    assert "Traceback" not in log and not [line for line in log.splitlines() if " ERROR " in line], log
    # The log before it says what the bot was doing; the reason is its last line.
    return log.splitlines()[-1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
async def test_sdbot_device_cuda_without_a_gpu_stops_with_one_line_and_exit_code_2(
    fake: FakeDiscord, tiny_model_dir: Path, tmp_path: Path
) -> None:
    assert await refused_at_start(fake, tmp_path, tiny_model_dir, "cuda") == (
        f"sdbot: SDBOT_DEVICE is cuda but torch {torch.__version__} sees no CUDA GPU: check the driver, install a"
        " CUDA build of torch, or set SDBOT_DEVICE=cpu"
    )


async def test_two_cpu_engines_start_side_by_side_and_draw_every_job(
    fake: FakeDiscord, tiny_model_dir: Path, tmp_path: Path
) -> None:
    log = tmp_path / "sdbot.log"
    with log.open("wb") as stderr:
        bot = await start_bot(fake, tmp_path, tiny_model_dir, {"SDBOT_DEVICE": "cpu,cpu"}, stderr.fileno())
        for member in MEMBERS:
            await (await fake.slash("imagine", {"prompt": f"fox {member}", "steps": 2}, user_id=member)).wait_response()
        await fake.wait_for(lambda: states(tmp_path) == ["delivered"] * 3, timeout=60)
        bot.terminate()
        assert await asyncio.wait_for(bot.wait(), 60) == 0
    lines = log.read_text().splitlines()
    assert sum("engine ready" in line for line in lines) == 2, "\n".join(lines)
    # The two share the cores rather than each taking all of them.
    threads = max(1, (os.cpu_count() or 1) // 2)
    assert sum(f"using {threads} CPU threads" in line for line in lines) == 2, "\n".join(lines)
    assert len(results(fake)) == 3


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
async def test_a_gpu_the_box_does_not_have_is_one_line_and_the_other_engines_stop(
    fake: FakeDiscord, tiny_model_dir: Path, tmp_path: Path
) -> None:
    # The CPU engine is still loading then: the bot's stderr ends only once that engine has stopped too.
    line = await refused_at_start(fake, tmp_path, tiny_model_dir, "cpu,cuda:3")
    assert line.startswith("sdbot: SDBOT_DEVICE is cuda:3 but torch"), line


def niceness(pid: int, thread: int) -> int:
    """A thread's nice value, from /proc (field 19 of its stat, counted past the parenthesised name)."""
    stat = Path(f"/proc/{pid}/task/{thread}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[16])


FOX = GenerationParams(prompt="a red fox", width=64, height=64, steps=20, seed=7)


async def test_the_engine_process_runs_below_the_bot_without_its_token_and_ignores_stop_signals(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", TOKEN)
    engine = ProcessEngine(EngineCommand(model=str(tiny_model_dir), device="cpu"))
    await engine.start()
    try:
        pid = engine.pid
        assert pid is not None

        def signal_it(progress: Progress) -> None:
            if progress.step == 1:  # SIGTERM from a stop, SIGINT from a Ctrl-C: the job goes on
                os.kill(pid, signal.SIGTERM)
                os.kill(pid, signal.SIGINT)

        first = await engine.generate("job-1", FOX, signal_it)
        second = await engine.generate("job-2", FOX, lambda _: None)
        assert engine.pid == pid and first.images[0].png == second.images[0].png
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert TOKEN.encode() not in b"\0".join(environ) and not [v for v in environ if v.startswith(b"DISCORD_")]
        bot = os.getpriority(os.PRIO_PROCESS, 0)
        # Every thread, also those that imports (numpy's BLAS) and torch started before or after main().
        threads = {thread: niceness(pid, int(thread)) for thread in os.listdir(f"/proc/{pid}/task")}
        assert len(threads) > 1 and all(nice >= max(10, bot + 1) for nice in threads.values()), threads
    finally:
        await engine.close()


class DiesWhileTheBotStops(ProcessEngine):
    """The real engine process, killed (as by the kernel's OOM killer) once the bot has begun to stop."""

    def __init__(self, command: EngineCommand) -> None:
        super().__init__(command)
        self.starts = 0
        self.stopping: asyncio.Event = asyncio.Event()
        self.batches_while_stopping = 0

    async def start(self, on_starting: Callable[[str], object] | None = None) -> EngineReady:
        self.starts += 1
        return await super().start(on_starting)

    async def generate_batch(self, requests: Sequence[GenerateRequest], on_progress: ProgressCallback) -> list[Outcome]:
        if self.stopping.is_set():
            self.batches_while_stopping += 1

        def progress(step: Progress) -> None:
            on_progress(step)
            if self.stopping.is_set() and self.pid is not None:
                os.kill(self.pid, signal.SIGKILL)

        return await super().generate_batch(requests, progress)


async def test_an_engine_that_dies_while_the_bot_stops_is_not_started_again(
    fake: FakeDiscord, tiny_model_dir: Path, tmp_path: Path
) -> None:
    engine = DiesWhileTheBotStops(EngineCommand(model=str(tiny_model_dir), device="cpu"))
    # The grace runs out in full (the job never finishes): long enough for the kill at the next step.
    client = make_bot(tmp_path, engine, shutdown_grace=2.0)
    async with fake.connected(client, timeout=60):
        inter = await fake.slash("imagine", {"prompt": "a slow fox", "steps": 100})
        await inter.wait_response()
        ack = inter.original
        assert ack is not None
        await fake.wait_for(lambda: "step" in ack.content, timeout=30, what="the job running")
        closing = asyncio.create_task(client.close())
        await fake.wait_for(lambda: client.closing or None)
        engine.stopping.set()
        await closing
    assert engine.batches_while_stopping == 1, "it died within the grace; the retry found the bot stopping"
    assert engine.starts == 1, "nothing is started while the bot stops"
    assert states(tmp_path) == ["running"], "the job runs again after the next start"
    assert not [m for m in fake.messages() if "❌" in m.content], "and its member is not told it failed"


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
