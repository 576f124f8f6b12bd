"""Member settings: /settings (each member's own defaults); /imagine and the pipeline apply them."""

from __future__ import annotations

from bot.features import Registry, Shared
from bot.member_settings.command import SettingsService, build_settings_command


def setup(shared: Shared, registry: Registry) -> None:
    """Add /settings; read every member's settings at start."""
    service = SettingsService(
        store=shared.member_settings,
        models=shared.models,
        styles=shared.styles,
        quota=shared.quota,
        engine_ready=shared.engine_ready,
        files=shared.files,
        hires_upscaler_for=shared.hires_upscaler_for,
    )
    registry.commands.append(build_settings_command(service))
    registry.on_start.append(shared.member_settings.load)
