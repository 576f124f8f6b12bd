"""Styles: /sdadmin styles (each server's named styles); /imagine applies them."""

from __future__ import annotations

from bot.features import Registry, Shared
from bot.styles.commands import StyleAdmin, add_style_commands


def setup(shared: Shared, registry: Registry) -> None:
    """Add /sdadmin styles; read every server's styles at start."""
    add_style_commands(registry.admin_group, StyleAdmin(styles=shared.styles, admin=shared.admin, clock=shared.clock))
    registry.on_start.append(shared.styles.load)
