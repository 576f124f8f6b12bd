"""/queue and /quota for members; /sdadmin limits, ban, unban, queue, cancel, pause and resume for admins."""

from __future__ import annotations

import logging
import math
import socket
from collections.abc import Callable

import discord
from discord import app_commands

from bot.interactions.adapter import caller_and_responder, member_option
from bot.interactions.port import Caller, MemberOption, Responder, fit_lines
from bot.limits.admin_group import AdminGroup
from bot.limits.admin_store import AdminStore
from bot.limits.owners import Owners, owner_allowed
from bot.limits.pauses import EVERY_SERVER, Pauses, hold_reason
from bot.limits.quota import Quota
from bot.limits.rules import DAY, HOUR, LIMIT_SPECS, SPECS, Limits, Override, Scope
from bot.pipeline.dispatch import Dispatcher
from bot.pipeline.engine_stats import Ending, EngineStatus
from bot.pipeline.estimates import Estimator
from bot.pipeline.fair_queue import FairQueue
from bot.pipeline.progress import Clock
from bot.pipeline.store import JobStore
from core.jobs import Job, JobState

log = logging.getLogger(__name__)

_MAX_LINES = 20
# Discord caps a message at 2,000 characters; room is left for a heading.
_LINES_CHARS = 1800


def _value(limits: Limits | Override, name: str) -> str:
    """A limit as admins read it: None in full limits and 0 in an override lift it."""
    return SPECS[name].shown(getattr(limits, name))


def describe_limits(limits: Limits) -> str:
    return "\n".join(f"• {spec.label}: {_value(limits, spec.name)}" for spec in LIMIT_SPECS)


def describe_override(override: Override) -> str:
    return ", ".join(
        f"{spec.label} {_value(override, spec.name)}"
        for spec in LIMIT_SPECS
        if getattr(override, spec.name) is not None
    )


class QueueView:
    """The queue as members and admins read it: position, state and estimated start."""

    def __init__(self, *, queue: FairQueue[Job], dispatcher: Dispatcher, estimator: Estimator, clock: Clock) -> None:
        self.queue = queue
        self.dispatcher = dispatcher
        self.estimator = estimator
        self.clock = clock

    def lines(self, shown: Callable[[Job], bool] = lambda job: True) -> list[str]:
        """The running and waiting jobs that are `shown`, as many as fit in a message."""
        now = self.clock()
        lines = []
        for job, started in self.dispatcher.running_jobs():
            if shown(job):
                lines.append(
                    f"• `{job.id}` running since <t:{math.floor(started)}:R> for <@{job.user_id}> — {_short(job)}"
                )
        order = self.queue.order()
        for position, job in enumerate(order, start=1):
            if not shown(job):
                continue
            held = hold_reason(self.queue, job.guild_id, "its server")
            if held is None:
                ahead = [queued.params for queued in order[: position - 1]]
                start = self.estimator.start_at(ahead, self.dispatcher.running(), now)
                when = f"starting <t:{math.ceil(start)}:R>"
            else:
                when = f"waiting: {held}"
            lines.append(f"• `{job.id}` #{position} in line, {when}, for <@{job.user_id}> — {_short(job)}")
        return _fit(lines)


def engine_line(status: EngineStatus) -> str:
    """One engine in /sdadmin workers."""
    ended = ", ".join(f"{count} {ending.value}" for ending, count in status.jobs.items() if ending is not Ending.DONE)
    last = "no batch yet"
    if status.last_batch_at is not None:
        last = f"last batch <t:{math.floor(status.last_batch_at)}:R>"
    model = f"`{status.model[:60]}`" if status.model else "no model yet"
    where = f"`{status.device}`" if status.host == "local" else f"`{status.host[:60]}` `{status.device}`"
    beat = f" · heartbeat <t:{math.floor(status.last_heartbeat)}:R>" if status.last_heartbeat is not None else ""
    return (
        f"**{status.number}.** {where} — {model} · {status.in_flight} batches in flight ·"
        f" {status.images_per_minute:.1f} images/min · {status.images} images{f' ({ended})' if ended else ''} ·"
        f" {last} · {status.restarts} restarts{beat}"
    )


def _fit(lines: list[str]) -> list[str]:
    """The first lines, up to _MAX_LINES and _LINES_CHARS, and how many more there are."""
    return fit_lines(lines, _LINES_CHARS, _MAX_LINES)


def _short(job: Job) -> str:
    prompt = job.params.prompt if len(job.params.prompt) <= 60 else job.params.prompt[:59] + "…"
    return f"{job.params.mode.value} “{prompt}”"


def _refill(recent: tuple[tuple[float, int], ...], window: float, now: float) -> str:
    inside = [at for at, _ in recent if at > now - window]
    return f", the oldest frees up <t:{math.ceil(min(inside) + window)}:R>" if inside else ""


class MemberCommands:
    """The answers behind /queue and /quota: a member's own jobs and limits."""

    def __init__(self, *, quota: Quota, queue_view: QueueView, clock: Clock) -> None:
        self.quota = quota
        self.queue_view = queue_view
        self.clock = clock

    def queue_text(self, caller: Caller) -> str:
        """The member's running and waiting jobs, and whether this server's queue is paused."""
        lines = self.queue_view.lines(lambda job: job.user_id == caller.user_id)
        text = "\n".join(lines) if lines else "You have no jobs waiting or running."
        held = hold_reason(self.queue_view.queue, caller.guild_id) if caller.guild_id is not None else None
        if held is not None:
            text = f"⏸ {held[0].upper()}{held[1:]}: jobs still join it, and start once it is resumed.\n{text}"
        return text

    async def quota_text(self, caller: Caller) -> str:
        """What the member has used of their limits, what is left, and when it refills."""
        limits = await self.quota.limits(caller.guild_id, caller.user_id, caller.role_ids)
        usage = await self.quota.usage(caller.user_id)
        now = self.clock()
        lines = []
        for limit, window, name in ((limits.images_per_hour, HOUR, "hour"), (limits.images_per_day, DAY, "day")):
            used = sum(cost for at, cost in usage.recent if at > now - window)
            if limit is None:
                lines.append(f"• This {name}: {used} images, no limit")
            else:
                lines.append(
                    f"• This {name}: {used} of {limit} images used, {max(0, limit - used)} left"
                    f"{_refill(usage.recent, window, now)}"
                )
        queued = "no limit" if limits.max_queued is None else str(limits.max_queued)
        lines.append(f"• Waiting or running: {usage.active} (at most {queued})")
        lines.append(f"• Between commands: {limits.cooldown_s:g} s")
        if limits.max_size is not None or limits.max_steps is not None:
            lines.append(f"• Largest side: {_value(limits, 'max_size')} px, steps: {_value(limits, 'max_steps')}")
        return "\n".join(lines)


def build_member_commands(*, quota: Quota, queue_view: QueueView, clock: Clock) -> list[app_commands.Command]:  # type: ignore[type-arg]
    """/queue and /quota: a member's own jobs and limits, answered privately."""
    commands = MemberCommands(quota=quota, queue_view=queue_view, clock=clock)

    @app_commands.command(name="queue", description="Your jobs: where they are in line and when they start")
    async def queue_command(interaction: discord.Interaction) -> None:
        caller, responder = caller_and_responder(interaction)
        await responder.reply_privately(commands.queue_text(caller), quiet=True)

    @app_commands.command(name="quota", description="What you can still generate, and when it refills")
    async def quota_command(interaction: discord.Interaction) -> None:
        caller, responder = caller_and_responder(interaction)
        await responder.reply_privately(await commands.quota_text(caller))

    return [queue_command, quota_command]


class AdminCommands:
    """The actions behind /sdadmin; every change is logged with who made it."""

    def __init__(
        self,
        *,
        admin: AdminStore,
        store: JobStore,
        quota: Quota,
        queue: FairQueue[Job],
        dispatcher: Dispatcher,
        queue_view: QueueView,
        pauses: Pauses,
        owners: Owners,
        clock: Clock,
    ) -> None:
        self.admin = admin
        self.store = store
        self.quota = quota
        self.queue = queue
        self.dispatcher = dispatcher
        self.queue_view = queue_view
        self.pauses = pauses
        self.owners = owners
        self.clock = clock

    @staticmethod
    def _scope(guild_id: int, role_id: int | None, member_id: int | None) -> tuple[Scope, int]:
        if member_id is not None:
            return Scope.MEMBER, member_id
        if role_id is not None:
            return Scope.ROLE, role_id
        return Scope.GUILD, guild_id

    async def show_limits(self, caller: Caller, role_id: int | None, member: MemberOption | None) -> str:
        """The defaults, every override on this server, and what applies to one member or role."""
        assert caller.guild_id is not None
        overrides = await self.admin.overrides(caller.guild_id)
        lines = ["**Defaults** (from the bot's settings):", describe_limits(self.quota.defaults)]
        if overrides.guild is not None:
            lines.append(f"**This server:** {describe_override(overrides.guild)}")
        for overridden_role, override in overrides.roles.items():
            lines.append(f"**<@&{overridden_role}>:** {describe_override(override)}")
        for user_id, override in overrides.members.items():
            lines.append(f"**<@{user_id}>:** {describe_override(override)}")
        if member is not None:
            effective = await self.quota.limits(caller.guild_id, member.id, member.role_ids)
            lines += [f"**What applies to <@{member.id}>:**", describe_limits(effective)]
        elif role_id is not None:
            effective = await self.quota.limits(caller.guild_id, 0, [role_id])
            lines += [f"**What applies to a member with only <@&{role_id}>:**", describe_limits(effective)]
        return "\n".join(lines)

    async def set_limit(
        self, caller: Caller, setting: str, value: float | None, role_id: int | None, member_id: int | None
    ) -> str:
        """Set (or with None clear) one limit for the server, a role or a member."""
        assert caller.guild_id is not None
        scope, target = self._scope(caller.guild_id, role_id, member_id)
        spec = SPECS[setting]
        if value is not None and not spec.wait and value != int(value):
            return f"{spec.label.capitalize()} must be a whole number, not {value:g}."
        if value is not None and spec.bounds is not None and not spec.bounds[0] <= value <= spec.bounds[1]:
            low, high = spec.bounds
            return f"{spec.label.capitalize()} must be a whole number from {low} to {high}, not {value:g}."
        await self.admin.set_override(caller.guild_id, scope, target, setting, value, caller.user_id, self.clock())
        who = {Scope.GUILD: "this server", Scope.ROLE: f"<@&{target}>", Scope.MEMBER: f"<@{target}>"}[scope]
        if value is None:
            return f"Cleared {spec.label} for {who}: the next level up applies."
        return f"Set {spec.label} for {who} to {spec.shown(value)}."

    async def ban(self, caller: Caller, member_id: int, reason: str) -> str:
        """Stop a member from using the bot on this server."""
        assert caller.guild_id is not None
        await self.admin.ban(caller.guild_id, member_id, reason, caller.user_id, self.clock())
        return f"Banned <@{member_id}> from using the bot here ({reason})."

    async def unban(self, caller: Caller, member_id: int) -> str:
        """Let a banned member use the bot again."""
        assert caller.guild_id is not None
        if await self.admin.unban(caller.guild_id, member_id, caller.user_id, self.clock()):
            return f"<@{member_id}> can use the bot again."
        return f"<@{member_id}> was not banned."

    async def cancel(self, caller: Caller, job_id: str) -> str:
        """Cancel a job of this server that waits or runs."""
        job = await self.store.get(job_id.strip().strip("`"))
        if job is None or job.state not in (JobState.QUEUED, JobState.RUNNING):
            return f"No job `{job_id}` is waiting or running."
        if job.guild_id != caller.guild_id:
            return f"Job `{job_id}` belongs to another server."
        outcome = await self.dispatcher.cancel(job, caller.user_id)
        await self.admin.log(caller.guild_id, caller.user_id, f"cancel {job.id}", self.clock())
        return outcome

    def workers_text(self) -> str:
        """Each engine: where it runs, its model, its load and what it has drawn (for the bot's owners)."""
        now = self.clock()
        statuses = self.dispatcher.engine_statuses(now)
        lines = [engine_line(status) for status in statuses]
        heading = f"**Engines** ({len(statuses)}; the local ones on `{socket.gethostname()}`)"
        return heading + "\n" + "\n".join(_fit(lines))

    def queue_text(self, caller: Caller, everywhere: bool) -> str:
        """This server's jobs, running and waiting (every server's for the bot's owners)."""
        guild_id = caller.guild_id
        lines = self.queue_view.lines() if everywhere else self.queue_view.lines(lambda job: job.guild_id == guild_id)
        held = hold_reason(self.queue, None if everywhere else guild_id)
        heading = f"**Queue{' of every server' if everywhere else ''}{' (paused)' if held else ''}**"
        return f"{heading}\n" + ("\n".join(lines) if lines else "Nothing waiting.")

    async def pause(self, caller: Caller, paused: bool) -> str:
        """Pause or resume this server's queue: its jobs still join, none of them starts; other servers' go on."""
        assert caller.guild_id is not None
        changed = await self.pauses.set(caller.guild_id, paused, caller.user_id, self.clock())
        action = "pause" if paused else "resume"
        await self.admin.log(caller.guild_id, caller.user_id, f"{action} the queue", self.clock())
        if paused:
            again = "" if changed else " (it already was)"
            return (
                f"The queue is paused on this server{again}: jobs still join it, none starts until `/sdadmin resume`."
                " Other servers' jobs keep running."
            )
        if self.pauses.paused(EVERY_SERVER):
            return "This server's queue is resumed, but every server's is paused until the bot's owners resume it."
        return "The queue runs again."

    async def pause_everywhere(self, caller: Caller, paused: bool) -> str:
        """The bot's owners pause or resume every server's queue at once (a server paused by its admins stays so)."""
        await self.pauses.set(EVERY_SERVER, paused, caller.user_id, self.clock())
        action = "pause" if paused else "resume"
        await self.admin.log(caller.guild_id, caller.user_id, f"{action} every server's queue", self.clock())
        if paused:
            return (
                "Every server's queue is paused: jobs still join, none starts until `/sdadmin resume everywhere:True`."
            )
        still = self.pauses.servers_paused()
        if still:
            return f"Every server's queue runs again, except {still} paused by their own admins."
        return "Every server's queue runs again."


def add_admin_commands(group: AdminGroup, commands: AdminCommands) -> None:
    """Add limits, bans and the queue to /sdadmin."""
    limits = group.subgroup("limits", "Per-member limits")
    settings = [app_commands.Choice(name=spec.label, value=spec.name) for spec in LIMIT_SPECS]

    @limits.command(name="show", description="The limits that apply, and every override on this server")
    @app_commands.describe(role="Show what applies with this role", member="Show what applies to this member")
    async def limits_show(
        interaction: discord.Interaction, role: discord.Role | None = None, member: discord.Member | None = None
    ) -> None:
        caller, responder = caller_and_responder(interaction)
        named = member_option(member) if member is not None else None
        await responder.reply_privately(await commands.show_limits(caller, _id(role), named), quiet=True)

    @limits.command(name="set", description="Set a limit for the server, a role or a member (0: no limit)")
    @app_commands.describe(
        setting="Which limit",
        value="The new value; 0 means no limit (no cooldown)",
        role="Set it for this role (the most generous of a member's roles wins)",
        member="Set it for this member (beats roles)",
    )
    @app_commands.choices(setting=settings)
    async def limits_set(
        interaction: discord.Interaction,
        setting: app_commands.Choice[str],
        value: app_commands.Range[float, 0, 1_000_000],
        role: discord.Role | None = None,
        member: discord.Member | None = None,
    ) -> None:
        caller, responder = caller_and_responder(interaction)
        text = await commands.set_limit(caller, setting.value, value, _id(role), _id(member))
        await responder.reply_privately(text, quiet=True)

    @limits.command(name="clear", description="Remove an override, so the next level up applies")
    @app_commands.choices(setting=settings)
    async def limits_clear(
        interaction: discord.Interaction,
        setting: app_commands.Choice[str],
        role: discord.Role | None = None,
        member: discord.Member | None = None,
    ) -> None:
        caller, responder = caller_and_responder(interaction)
        text = await commands.set_limit(caller, setting.value, None, _id(role), _id(member))
        await responder.reply_privately(text, quiet=True)

    @group.command(name="ban", description="Stop a member from using the bot on this server")
    async def ban(
        interaction: discord.Interaction, member: discord.Member, reason: app_commands.Range[str, 1, 200] = "no reason"
    ) -> None:
        caller, responder = caller_and_responder(interaction)
        await responder.reply_privately(await commands.ban(caller, member.id, reason), quiet=True)

    @group.command(name="unban", description="Let a banned member use the bot again")
    async def unban(interaction: discord.Interaction, member: discord.Member) -> None:
        caller, responder = caller_and_responder(interaction)
        await responder.reply_privately(await commands.unban(caller, member.id), quiet=True)

    everywhere_help = "Every server at once (the bot's owners only)"

    async def owners_may(caller: Caller, responder: Responder, everywhere: bool, action: str) -> bool:
        return not everywhere or await owner_allowed(caller, responder, commands.owners, action)

    @group.command(name="queue", description="This server's jobs, waiting or running")
    @app_commands.describe(everywhere=everywhere_help)
    async def queue(interaction: discord.Interaction, everywhere: bool = False) -> None:
        caller, responder = caller_and_responder(interaction)
        if await owners_may(
            caller, responder, everywhere, "see every server's queue; `/sdadmin queue` shows this server's"
        ):
            await responder.reply_privately(commands.queue_text(caller, everywhere), quiet=True)

    @group.command(name="workers", description="The engines drawing for every server (the bot's owners only)")
    async def workers(interaction: discord.Interaction) -> None:
        caller, responder = caller_and_responder(interaction)
        if await owner_allowed(caller, responder, commands.owners, "see the engines: they draw for every server"):
            await responder.reply_privately(commands.workers_text(), quiet=True)

    @group.command(name="cancel", description="Cancel any job of this server by its id")
    async def cancel(interaction: discord.Interaction, job_id: app_commands.Range[str, 1, 40]) -> None:
        caller, responder = caller_and_responder(interaction)
        await responder.reply_privately(await commands.cancel(caller, job_id), quiet=True)

    async def set_paused(interaction: discord.Interaction, everywhere: bool, paused: bool) -> None:
        caller, responder = caller_and_responder(interaction)
        verb = "pause" if paused else "resume"
        if await owners_may(
            caller, responder, everywhere, f"{verb} every server's queue; `/sdadmin {verb}` {verb}s this server's"
        ):
            action = commands.pause_everywhere if everywhere else commands.pause
            await responder.reply_privately(await action(caller, paused), quiet=True)

    @group.command(name="pause", description="Stop starting this server's jobs (they still queue)")
    @app_commands.describe(everywhere=everywhere_help)
    async def pause(interaction: discord.Interaction, everywhere: bool = False) -> None:
        await set_paused(interaction, everywhere, paused=True)

    @group.command(name="resume", description="Start this server's jobs again")
    @app_commands.describe(everywhere=everywhere_help)
    async def resume(interaction: discord.Interaction, everywhere: bool = False) -> None:
        await set_paused(interaction, everywhere, paused=False)


def _id(option: discord.abc.Snowflake | None) -> int | None:
    """The id of a role or member option, None when left out."""
    return option.id if option is not None else None
