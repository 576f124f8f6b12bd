"""Safe content: /sdadmin policy (the block list and what happens to flagged images, per server and channel)."""

from __future__ import annotations

from bot.features import Registry, Shared
from bot.policy.commands import PolicyCommands, add_policy_commands


def setup(shared: Shared, registry: Registry) -> None:
    """Add /sdadmin policy; intake reads the same policy store for every job."""
    commands = PolicyCommands(policy=shared.policy, engine_ready=shared.engine_ready, clock=shared.clock)
    add_policy_commands(registry.admin_group, commands)
