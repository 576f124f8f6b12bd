"""/imagine: a member's prompt (and image) become a stored, acknowledged, queued job."""

from __future__ import annotations

from bot.features import Registry, Shared
from bot.imagine.command import ImagineService, build_imagine_command


def setup(shared: Shared, registry: Registry) -> ImagineService:
    """Add /imagine; returns its service."""
    service = ImagineService(
        intake=shared.intake,
        engine_ready=shared.engine_ready,
        models=shared.models,
        images=shared.images,
        styles=shared.styles,
        member_settings=shared.member_settings,
        vae_for=shared.vae_for,
        hires_upscaler_for=shared.hires_upscaler_for,
        files=shared.files,
    )
    registry.commands.append(build_imagine_command(service))
    return service
