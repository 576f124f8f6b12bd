"""Every engine the bot feeds: one per local device (SDBOT_DEVICE), started, asked and stopped together, and those
its workers serve through Redis, which come and go.

The dispatcher gives each engine batches of its own; what the rest of the bot asks of "the engine" (may this job be
drawn at all, rescan the models folder, stop) is asked of all of them here.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace

from bot.pipeline.engine_client import Engine, EngineStartError
from core.devices import Devices, InvalidDevices
from core.wire import EngineReady


def combined(readies: Sequence[EngineReady]) -> EngineReady:
    """What a job may ask of the engines: what every one of them can draw, so that any free engine can take it."""
    first = readies[0]
    families = set.intersection(*(set(ready.family_pixels) for ready in readies))
    return replace(
        first,
        device=",".join(ready.device for ready in readies),
        max_pixels=min(ready.max_pixels for ready in readies),
        max_batch=min(ready.max_batch for ready in readies),
        safety_checker=all(ready.safety_checker for ready in readies),
        family_pixels={family: min(ready.family_pixels[family] for ready in readies) for family in families},
    )


class Engines:
    """The local engines, in the order of their devices (none with SDBOT_DEVICE=none), then the remote ones."""

    def __init__(self, members: Sequence[Engine]) -> None:
        self.local = tuple(members)
        self.remote: list[Engine] = []
        # Set while Redis cannot be reached: the remote engines wait for it.
        self.broker_down = False

    @property
    def stalled(self) -> bool:
        """Whether no job can start because Redis cannot be reached and there is no local engine to go on with."""
        return self.broker_down and not self.local

    @property
    def members(self) -> tuple[Engine, ...]:
        return (*self.local, *self.remote)

    def add_remote(self, engine: Engine) -> None:
        self.remote.append(engine)

    def remove_remote(self, engine: Engine) -> None:
        if engine in self.remote:
            self.remote.remove(engine)

    @property
    def ready(self) -> EngineReady | None:
        """What every started engine can draw; None before any has started (or while no worker is connected)."""
        readies = [engine.ready for engine in self.members if engine.ready is not None]
        return combined(readies) if readies else None

    async def start(self, on_starting: Callable[[str], object] | None = None) -> EngineReady | None:
        """Start every local engine at once; if one cannot start, stop the others and raise its EngineStartError."""
        if not self.local:
            return None
        many = len(self.local) > 1

        def stages(number: int) -> Callable[[str], object] | None:
            if on_starting is None or not many:
                return on_starting
            report = on_starting
            return lambda stage: report(f"engine {number} of {len(self.local)}: {stage}")

        outcomes = await asyncio.gather(
            *(engine.start(stages(number)) for number, engine in enumerate(self.local, 1)), return_exceptions=True
        )
        failure = next((outcome for outcome in outcomes if isinstance(outcome, BaseException)), None)
        if failure is not None:
            await self.close()
            raise failure
        ready = self.ready
        assert ready is not None
        return ready

    async def reload_models(self) -> None:
        """Have every engine rescan the models folder after its current batch."""
        await asyncio.gather(*(engine.reload_models() for engine in self.members))

    def begin_shutdown(self) -> None:
        """Start no engine again from now on; running ones finish their batches."""
        for engine in self.local:
            engine.begin_shutdown()

    async def close(self) -> None:
        await asyncio.gather(*(engine.close() for engine in self.local))


def cpu_threads(on_cpu: int) -> int | None:
    """Torch threads for each of `on_cpu` engines on the CPU: several split its cores; one alone keeps torch's own
    choice (every core)."""
    return max(1, (os.cpu_count() or 1) // on_cpu) if on_cpu > 1 else None


async def count_gpus(python: str = sys.executable) -> int:
    """How many CUDA GPUs torch sees, asked of a child process (the bot never imports torch)."""
    process = await asyncio.create_subprocess_exec(
        python, "-m", "engine.gpus", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        last = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise EngineStartError(f"SDBOT_DEVICE is all, but counting the GPUs failed: {last[0]}")
    return int(out.decode().strip())


async def resolve_devices(devices: Devices, python: str = sys.executable) -> tuple[str, ...]:
    """The devices to start an engine on, `all` counted; EngineStartError with one line when there are none."""
    if not devices.every_gpu:
        return devices.listed
    try:
        return devices.resolve(await count_gpus(python))
    except InvalidDevices as exc:
        raise EngineStartError(f"SDBOT_DEVICE {exc}") from None
