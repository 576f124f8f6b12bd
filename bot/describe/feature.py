"""/describe: the owner's captioning model (SDBOT_DESCRIBE_MODEL) turns an image into prompts to imagine."""

from __future__ import annotations

from pathlib import Path

from bot.describe.command import DescribeService, build_describe_command
from bot.describe.runner import Describer
from bot.describe.store import Described
from bot.features import Registry, Shared
from bot.imagine.command import ImagineService
from bot.results.buttons import ImageAction


def setup(shared: Shared, registry: Registry, *, imagine: ImagineService, model: Path | None) -> DescribeService:
    """Add /describe and its prompts' buttons; returns its service."""
    service = DescribeService(
        describer=Describer(model), described=Described(shared.database), imagine=imagine, clock=shared.clock
    )
    registry.commands.append(build_describe_command(service))
    registry.presses[ImageAction.DESCRIBE] = service.press
    return service
