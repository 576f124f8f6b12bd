"""Runs the owner's captioning model for /describe in a child process (`python -m engine.describe`): the bot never
imports torch, the model loads only when asked for and its memory is freed when the process ends."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

PROMPTS = 4
# Starting Python, torch and transformers takes seconds; a BLIP caption on the CPU about one more.
TIMEOUT_S = 180.0
NOT_INSTALLED = (
    "No captioning model is installed for /describe: the bot's owner can download a BLIP captioning model (such as"
    " Salesforce/blip-image-captioning-base) or a WD14 tagger (such as SmilingWolf/wd-vit-tagger-v3: model.onnx and"
    " selected_tags.csv) into a folder and set SDBOT_DESCRIBE_MODEL to it."
)
FAILED = "I could not describe that image; the bot's owner can find why in its log."


class DescribeFailed(Exception):
    """No prompts came; the message is the sentence for the member."""


@dataclass
class Describer:
    """The captioning model in SDBOT_DESCRIBE_MODEL, run one request at a time."""

    model: Path | None
    python: str = sys.executable
    device: str = "cpu"
    timeout: float = TIMEOUT_S

    def __post_init__(self) -> None:
        # One child at a time: each loads the whole model.
        self._one = asyncio.Lock()

    @property
    def busy(self) -> bool:
        """Whether an image is being described now (a second request is refused, not queued without bound)."""
        return self._one.locked()

    async def describe(self, png: bytes) -> list[str]:
        """Prompts that would draw something like the image, or DescribeFailed with a sentence."""
        if self.model is None:
            raise DescribeFailed(NOT_INSTALLED)
        argv = [self.python, "-m", "engine.describe", "--model", str(self.model), "--device", self.device]
        async with self._one:
            process = await asyncio.create_subprocess_exec(
                *argv,
                "--count",
                str(PROMPTS),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            try:
                out, err = await asyncio.wait_for(process.communicate(png), self.timeout)
            except asyncio.TimeoutError:
                process.kill()
                await process.wait()
                log.error("/describe: the captioning model took more than %.0f s", self.timeout)
                raise DescribeFailed(FAILED) from None
        if process.returncode != 0:
            log.error("/describe: %s", err.decode(errors="replace").strip().splitlines()[-1:] or process.returncode)
            raise DescribeFailed(FAILED)
        try:
            prompts = [str(p) for p in json.loads(out)["prompts"] if str(p).strip()]
        except (ValueError, KeyError, TypeError):
            log.error("/describe: the captioning process answered %r", out[:200])
            raise DescribeFailed(FAILED) from None
        if not prompts:
            raise DescribeFailed(FAILED)
        return prompts
