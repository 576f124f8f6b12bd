"""/sdadmin styles add|remove|list|import: a server's named styles (A1111's semantics and styles.csv)."""

from __future__ import annotations

import discord
from discord import app_commands

from bot.imagine.attachments import AttachmentInfo, download
from bot.interactions.adapter import caller_and_responder
from bot.interactions.port import MESSAGE_MAX, Caller, Responder, fit_lines
from bot.limits.admin_group import AdminGroup
from bot.limits.admin_store import AdminStore
from bot.pipeline.progress import Clock
from bot.styles.store import Styles
from core.params import MAX_PROMPT_CHARS, InvalidParams
from core.styles import MAX_NAME_CHARS, PLACEHOLDER, Style, StyleError, check_style, parse_styles_csv

# A styles.csv of a few hundred styles is tens of kilobytes.
MAX_CSV_BYTES = 1024 * 1024


def _line(style: Style) -> str:
    text = style.prompt if len(style.prompt) <= 80 else style.prompt[:79] + "…"
    negative = " (and a negative prompt)" if style.negative_prompt else ""
    return f"`{style.name}` — {text or '(no prompt)'}{negative}"


class StyleAdmin:
    """The actions behind /sdadmin styles; every change is logged with who made it."""

    def __init__(self, *, styles: Styles, admin: AdminStore, clock: Clock) -> None:
        self.styles = styles
        self.admin = admin
        self.clock = clock

    async def add(self, caller: Caller, name: str, prompt: str, negative_prompt: str) -> str:
        assert caller.guild_id is not None
        try:
            style = check_style(Style(name, prompt, negative_prompt))
            await self.styles.put(caller.guild_id, [style])
        except StyleError as exc:
            return str(exc)
        await self.admin.log(caller.guild_id, caller.user_id, f"style {style.name} added", self.clock())
        where = "in place of `{prompt}`" if PLACEHOLDER in style.prompt else "after the member's prompt"
        return f"Added the style `{style.name}`: its prompt goes {where}. Members pick it with `/imagine style:`."

    async def remove(self, caller: Caller, name: str) -> str:
        assert caller.guild_id is not None
        removed = await self.styles.remove(caller.guild_id, name)
        if removed is None:
            return f"This server has no style called `{name.strip()[:60]}`."
        await self.admin.log(caller.guild_id, caller.user_id, f"style {removed.name} removed", self.clock())
        return f"Removed the style `{removed.name}`."

    def describe(self, guild_id: int) -> str:
        """The server's styles, within one message."""
        styles = self.styles.in_guild(guild_id)
        if not styles:
            return "This server has no styles yet: add one with `/sdadmin styles add`, or import A1111's styles.csv."
        heading = f"**Styles** ({len(styles)})"
        # Room kept for Discord's 2,000 characters: the heading, its newline, and a margin.
        lines = fit_lines([_line(style) for style in styles], MESSAGE_MAX - 41 - len(heading))
        return "\n".join([heading, *lines])

    async def import_csv(self, caller: Caller, responder: Responder, info: AttachmentInfo) -> str:
        """Add (or replace) the styles of an A1111 styles.csv."""
        assert caller.guild_id is not None
        if info.size > MAX_CSV_BYTES:
            return f"{info.filename} is {info.size / 2**20:.1f} MiB: a styles.csv of at most 1 MiB, please."
        await responder.think(private=True)
        try:
            data = await download(info, MAX_CSV_BYTES)
            text = data.decode("utf-8-sig")
        except InvalidParams as exc:
            return str(exc)
        except UnicodeDecodeError:
            return f"{info.filename} is not UTF-8 text: save styles.csv as A1111 does (UTF-8), and attach it again."
        try:
            styles = parse_styles_csv(text)
            await self.styles.put(caller.guild_id, styles)
        except StyleError as exc:
            return f"{exc} Nothing was imported."
        await self.admin.log(caller.guild_id, caller.user_id, f"{len(styles)} styles imported", self.clock())
        return f"Imported {len(styles)} styles from {info.filename}: {', '.join(s.name for s in styles)}"[:MESSAGE_MAX]


def add_style_commands(group: AdminGroup, actions: StyleAdmin) -> None:
    """Add `/sdadmin styles add|remove|list|import`."""
    sub = group.subgroup("styles", "Named styles members add to their prompts with /imagine style:")

    @sub.command(name="add", description="Add a style (or replace the one of that name)")
    @app_commands.describe(
        name=f"Its name (1–{MAX_NAME_CHARS} characters, no commas)",
        prompt="Its prompt; {prompt} marks where the member's prompt goes (else it follows theirs after a comma)",
        negative_prompt="Added to the member's negative prompt",
    )
    async def add(
        interaction: discord.Interaction,
        name: app_commands.Range[str, 1, MAX_NAME_CHARS],
        prompt: app_commands.Range[str, 1, MAX_PROMPT_CHARS],
        negative_prompt: app_commands.Range[str, 1, MAX_PROMPT_CHARS] | None = None,
    ) -> None:
        caller, responder = caller_and_responder(interaction)
        await responder.reply_privately(await actions.add(caller, name, prompt, negative_prompt or ""), quiet=True)

    @sub.command(name="remove", description="Remove a style")
    @app_commands.describe(name="The style's name")
    async def remove(interaction: discord.Interaction, name: app_commands.Range[str, 1, MAX_NAME_CHARS]) -> None:
        caller, responder = caller_and_responder(interaction)
        await responder.reply_privately(await actions.remove(caller, name), quiet=True)

    @remove.autocomplete("name")
    async def remove_autocomplete(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return style_choices(actions.styles, interaction.guild_id, current)

    @sub.command(name="list", description="This server's styles")
    async def list_styles(interaction: discord.Interaction) -> None:
        caller, responder = caller_and_responder(interaction)
        assert caller.guild_id is not None
        await responder.reply_privately(actions.describe(caller.guild_id), quiet=True)

    @sub.command(name="import", description="Add the styles of an A1111 styles.csv (replacing those of the same names)")
    @app_commands.describe(file="A1111's styles.csv: columns name, prompt, negative_prompt")
    async def import_styles(interaction: discord.Interaction, file: discord.Attachment) -> None:
        caller, responder = caller_and_responder(interaction)
        answer = await actions.import_csv(caller, responder, AttachmentInfo.of(file))
        await responder.reply_privately(answer, quiet=True)


def style_choices(styles: Styles, guild_id: int | None, typed: str) -> list[app_commands.Choice[str]]:
    """Autocomplete for a comma-separated list of styles: the names matching the last one typed, each offered as the
    whole list with it completed (within Discord's 100 characters and 25 choices)."""
    *before, last = typed.split(",")
    known = {style.name.lower(): style.name for style in styles.in_guild(guild_id)}
    done = [known.get(name.strip().lower(), name.strip()) for name in before if name.strip()]
    prefix = ", ".join(done)
    choices = []
    for style in styles.in_guild(guild_id):
        if style.name in done or last.strip().lower() not in style.name.lower():
            continue
        value = f"{prefix}, {style.name}" if prefix else style.name
        if len(value) <= 100:
            choices.append(app_commands.Choice(name=value, value=value))
    return choices[:25]
