"""Limits and admin: /queue and /quota for members; /sdadmin limits, ban, unban, queue, cancel, pause and resume."""

from __future__ import annotations

from bot.features import Registry, Shared
from bot.limits.commands import AdminCommands, QueueView, add_admin_commands, build_member_commands


def setup(shared: Shared, registry: Registry) -> QueueView:
    """Add the members' queue and quota commands and the admins' limits and queue commands; hold paused queues
    and learn the bot's owners at start. Returns the queue as members read it."""
    queue_view = QueueView(
        queue=shared.queue, dispatcher=shared.dispatcher, estimator=shared.estimator, clock=shared.clock
    )
    registry.commands += build_member_commands(quota=shared.quota, queue_view=queue_view, clock=shared.clock)
    add_admin_commands(
        registry.admin_group,
        AdminCommands(
            admin=shared.admin,
            store=shared.jobs,
            quota=shared.quota,
            queue=shared.queue,
            dispatcher=shared.dispatcher,
            queue_view=queue_view,
            pauses=shared.pauses,
            owners=shared.owners,
            clock=shared.clock,
        ),
    )
    registry.on_start += [shared.pauses.load, shared.owners.refresh]
    return queue_view
