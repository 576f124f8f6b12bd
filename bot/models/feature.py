"""Models: /sdadmin models (the models folder, each channel's default model, a rescan for the bot's owners)."""

from __future__ import annotations

from bot.features import Registry, Shared
from bot.models.commands import ModelAdmin, add_model_commands


def setup(shared: Shared, registry: Registry) -> None:
    """Add /sdadmin models; read each channel's default model at start."""
    admin = ModelAdmin(
        models=shared.models, admin=shared.admin, reload_engine=shared.engines.reload_models, clock=shared.clock
    )
    add_model_commands(registry.admin_group, admin, shared.owners)
    registry.on_start.append(shared.channel_models.load)
