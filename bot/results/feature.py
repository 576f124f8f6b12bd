"""Results: the buttons on every result and status message, what a press does, and 🎛 Remix."""

from __future__ import annotations

import re

from bot.features import Registry, Shared
from bot.interactions.port import Caller, Responder
from bot.results.buttons import JobAction
from bot.results.presses import PressService
from bot.results.remix import MODAL_ID, RemixService


def setup(shared: Shared, registry: Registry, *, allow_dms: bool) -> PressService:
    """Answer every button press (the other features' handlers included: set this feature up last) and remix
    submissions; returns the press service the buttons call."""
    remix = RemixService(intake=shared.intake, engine_ready=shared.engine_ready)
    registry.presses[JobAction.REMIX] = remix.press

    async def submit_remix(caller: Caller, responder: Responder, match: re.Match[str]) -> None:
        await remix.submit(caller, responder, match["job"])

    registry.modals.append((MODAL_ID, submit_remix))
    return PressService(
        intake=shared.intake,
        sources=shared.sources,
        engine_ready=shared.engine_ready,
        cancel=shared.dispatcher.cancel,
        allow_dms=allow_dms,
        handlers=registry.presses,
        upscaler_for=shared.upscaler_for,
    )
