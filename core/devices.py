"""Which devices the engines run on: SDBOT_DEVICE is one device or a comma-separated list, one engine each (no torch).

`auto` (CUDA when torch sees a GPU, else the CPU), `cpu`, `cuda` (the first GPU) or `cuda:N`; `all` is every CUDA
GPU, counted when the engines start; `none` runs no engine here (the bot then draws only on its workers). `cpu` may
repeat (several CPU engines, for tests); a GPU may not, since two engines on one card would each plan for all its
memory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ALL = "all"
NONE = "none"
_DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:(0|[1-9][0-9]{0,2}))$")


class InvalidDevices(ValueError):
    """SDBOT_DEVICE names no usable devices; the message says what it should be."""


def check_device(device: str) -> str:
    """One device as the engine process takes it, or InvalidDevices."""
    if _DEVICE.match(device) is None:
        raise InvalidDevices(f"takes auto, cpu, cuda, cuda:N or all (or a list such as cuda:0,cuda:1), not {device!r}")
    return device


@dataclass(frozen=True)
class Devices:
    """The devices to start an engine on; `every_gpu` means one per CUDA GPU, counted at start."""

    listed: tuple[str, ...] = ()
    every_gpu: bool = False

    @classmethod
    def parse(cls, text: str) -> Devices:
        """`auto`, `cuda:0,cuda:1`, `all`, …; InvalidDevices naming what is wrong."""
        items = [item.strip().lower() for item in text.split(",")]
        if items == [ALL]:
            return cls(every_gpu=True)
        if items == [NONE]:
            return cls()
        if "" in items:
            raise InvalidDevices(f"has an empty entry: {text!r}")
        if ALL in items or NONE in items:
            raise InvalidDevices("takes all or none alone: every CUDA GPU, one engine each, or no engine here")
        listed = tuple(check_device(item) for item in items)
        gpus = [_gpu(item) for item in listed if item not in ("auto", "cpu")]
        if len(gpus) != len(set(gpus)) or ("auto" in listed and len(listed) > 1):
            raise InvalidDevices(f"names a GPU twice ({text}): each engine plans for all of its GPU's memory")
        return cls(listed)

    @property
    def none(self) -> bool:
        """Whether no engine is to run here."""
        return not self.listed and not self.every_gpu

    def resolve(self, gpu_count: int) -> tuple[str, ...]:
        """The devices, with `all` as one `cuda:N` per GPU; InvalidDevices when there is none."""
        if not self.every_gpu:
            return self.listed
        if gpu_count < 1:
            raise InvalidDevices("is all, but torch sees no CUDA GPU: check the driver, or set SDBOT_DEVICE=cpu")
        return tuple(f"cuda:{index}" for index in range(gpu_count))

    def __str__(self) -> str:
        return ALL if self.every_gpu else ",".join(self.listed) or NONE


def _gpu(device: str) -> int:
    """The index of a CUDA device (`cuda` is the first)."""
    return int(device.partition(":")[2] or 0)
