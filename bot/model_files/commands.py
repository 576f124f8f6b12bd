"""/sdadmin upscaler and /sdadmin vae: which of the owner's files a server uses where a job names none."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import discord
from discord import app_commands

from bot.interactions.adapter import caller_and_responder
from bot.interactions.port import MESSAGE_MAX, Caller, fit_lines
from bot.limits.admin_group import AdminGroup
from bot.limits.admin_store import AdminStore
from bot.model_files.store import Pick, ServerPicks
from bot.pipeline.progress import Clock

MAX_CHOICES = 25  # Discord offers at most 25
MAX_NAME = 100  # and shows 100 characters of each


@dataclass(frozen=True)
class PickSpec:
    """One kind of file a server picks: its built-in choices, the installed files, and how answers say it."""

    kind: Pick
    builtins: tuple[str, ...]  # a built-in picked as a file is (Lanczos); NONE clears the pick
    installed: Callable[[], Sequence[str]]
    fallback: Callable[[Sequence[str]], str]  # what applies without a pick
    shows: str  # "{name}" and "{how}"
    now: str  # "{name}"
    none_installed: str


NONE = "None"  # the VAE pick that means each model's own


class PickAdmin:
    """The actions behind one /sdadmin command that picks a file; every change is logged with who made it."""

    def __init__(self, spec: PickSpec, *, picks: ServerPicks, admin: AdminStore, clock: Clock) -> None:
        self.spec = spec
        self.picks = picks
        self.admin = admin
        self.clock = clock

    def _choices(self) -> list[str]:
        return [*self.spec.builtins, *self.spec.installed()]

    def choices(self, typed: str) -> list[app_commands.Choice[str]]:
        """The built-ins and installed files whose names contain what was typed."""
        names = [name for name in self._choices() if typed.strip().lower() in name.lower() and len(name) <= MAX_NAME]
        return [app_commands.Choice(name=name, value=name) for name in names[:MAX_CHOICES]]

    def current(self, guild_id: int | None) -> str:
        """What applies here now: the admins' pick while it is still there, else the fallback."""
        installed = self.spec.installed()
        return self.picks.chosen(guild_id, self.spec.kind, self._choices(), None) or self.spec.fallback(installed)

    def describe(self, guild_id: int) -> str:
        """What applies here, and what is installed."""
        installed = self.spec.installed()
        current = self.current(guild_id)
        how = "picked by an admin" if self.picks.picked(guild_id, self.spec.kind) == current else "the default"
        lines = [self.spec.shows.format(name=current, how=how)]
        if installed:
            lines += ["**Installed:**", *(f"`{name}`" for name in installed)]
        else:
            lines.append(self.spec.none_installed)
        return "\n".join(fit_lines(lines, MESSAGE_MAX))

    async def pick(self, caller: Caller, name: str) -> str:
        assert caller.guild_id is not None
        known = {choice.lower(): choice for choice in self._choices()}
        found = known.get(name.strip().lower())
        if found is None:
            close = difflib.get_close_matches(name.strip().lower(), list(known), n=3)
            hint = f" Did you mean {', '.join(f'`{known[c]}`' for c in close)}?" if close else ""
            return f"No {self.spec.kind.value} called `{name.strip()[:60]}` is installed.{hint}"
        await self.picks.set(caller.guild_id, self.spec.kind, None if found == NONE else found)
        await self.admin.log(caller.guild_id, caller.user_id, f"{self.spec.kind.value} set to {found}", self.clock())
        return self.spec.now.format(name=self.current(caller.guild_id))


def add_pick_command(
    group: AdminGroup, name: str, description: str, option: tuple[str, str], actions: PickAdmin
) -> None:
    """Add `/sdadmin <name> [<option>:]` (the option's name and description): without the option it shows what
    applies and what is installed."""
    option_name, option_description = option

    @group.command(name=name, description=description)
    @app_commands.rename(name=option_name)
    @app_commands.describe(name=option_description)
    async def command(
        interaction: discord.Interaction, name: app_commands.Range[str, 1, MAX_NAME] | None = None
    ) -> None:
        caller, responder = caller_and_responder(interaction)
        assert caller.guild_id is not None
        answer = actions.describe(caller.guild_id) if name is None else await actions.pick(caller, name)
        await responder.reply_privately(answer, quiet=True)

    @command.autocomplete("name")
    async def name_autocomplete(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return actions.choices(current)
