"""/settings: a member sees and sets their own defaults for /imagine, privately; each value shown with its source."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import discord
from discord import app_commands

from bot.interactions.adapter import caller_and_responder
from bot.interactions.port import MESSAGE_MAX, Caller, Responder, fit_lines
from bot.limits.quota import Quota
from bot.member_settings.applicable import still_applicable
from bot.member_settings.store import MemberSettingsStore
from bot.models.picker import Models
from bot.pipeline.model_files import ModelFiles
from bot.styles.commands import style_choices
from bot.styles.store import Styles
from core.aspect import CHOICES as ASPECT_CHOICES
from core.aspect import AspectRatio
from core.member_settings import MemberSettings, Setting, Source
from core.params import (
    DEFAULT_CFG,
    DEFAULT_HIRES_STRENGTH,
    DEFAULT_HIRES_UPSCALER,
    DEFAULT_SAMPLER,
    DEFAULT_STEPS,
    HIRES_CHOICES,
    HIRES_UPSCALERS,
    MAX_CFG,
    MAX_HIRES_STRENGTH,
    MAX_PROMPT_CHARS,
    MAX_SIZE,
    MAX_STEPS,
    MAX_UPSCALER_NAME,
    MIN_CFG,
    MIN_HIRES_STRENGTH,
    MIN_SIZE,
    MIN_STEPS,
    SAMPLERS,
    InvalidParams,
)
from core.prompt_syntax import parse_prompt_attention, quoted
from core.wire import EngineReady

ALL = "all"
# What `reset:` offers: every setting a member sees (a size is one, whether a ratio or a width and height).
RESETTABLE = {
    ALL: (),
    "model": (Setting.MODEL,),
    "size": (Setting.AR, Setting.WIDTH, Setting.HEIGHT),
    "steps": (Setting.STEPS,),
    "cfg": (Setting.CFG,),
    "sampler": (Setting.SAMPLER,),
    "negative prompt": (Setting.NEGATIVE_PROMPT,),
    "style": (Setting.STYLE,),
    "hires fix": (Setting.HIRES, Setting.HIRES_STRENGTH, Setting.HIRES_STEPS, Setting.HIRES_UPSCALER),
    "face fix": (Setting.FACE_FIX,),
    "quiet": (Setting.QUIET,),
}


@dataclass(frozen=True)
class SettingsChange:
    """What a member asked /settings to change: the values they named (as Discord delivered them; a hires fix of
    0 turns it off), and what to reset first."""

    values: Mapping[Setting, Any] = field(default_factory=dict)
    reset: str | None = None

    @property
    def empty(self) -> bool:
        return not self.values and self.reset is None


@dataclass(frozen=True)
class Shown:
    """One line of /settings: a setting's value and where it comes from."""

    label: str
    value: str
    source: Source

    def line(self) -> str:
        return f"**{self.label}:** {self.value} — {self.source.value}"


class SettingsService:
    """Checks a member's new defaults as /imagine would check them, keeps them, and shows what applies."""

    def __init__(
        self,
        *,
        store: MemberSettingsStore,
        models: Models,
        styles: Styles | None,
        quota: Quota,
        engine_ready: Callable[[], EngineReady | None],
        files: ModelFiles | None = None,
        hires_upscaler_for: Callable[[int | None], str] = lambda guild_id: DEFAULT_HIRES_UPSCALER,
    ) -> None:
        self.files = files or ModelFiles()
        # The hires fix's upscaler where neither the member nor the model names one (the server's).
        self.hires_upscaler_for = hires_upscaler_for
        self.store = store
        self.models = models
        self.styles = styles
        self.quota = quota
        self.engine_ready = engine_ready

    async def handle(self, caller: Caller, responder: Responder, change: SettingsChange) -> None:
        """Apply the change (if any) and answer privately with every setting and its source; a value the member
        may not keep is refused with a sentence and nothing is stored."""
        current = self.store.get(caller.user_id, caller.guild_id)
        try:
            updated = await self._changed(caller, current, change)
        except InvalidParams as exc:
            await responder.reply_privately(f"{exc} Nothing was changed.")
            return
        if updated != current:
            await self.store.save(caller.user_id, caller.guild_id, updated)
        heading = "**Your defaults for /imagine**" + (" (saved)" if not change.empty else "")
        await responder.reply_privately(await self.describe(caller, updated, heading), quiet=True)

    async def _changed(self, caller: Caller, current: MemberSettings, change: SettingsChange) -> MemberSettings:
        updated = current
        if change.reset is not None:
            if change.reset not in RESETTABLE:
                raise InvalidParams(f"Reset one of: {', '.join(RESETTABLE)}.")
            updated = MemberSettings() if change.reset == ALL else updated.without(*RESETTABLE[change.reset])
        limits = await self.quota.limits(caller.guild_id, caller.user_id, caller.role_ids)
        given = change.values
        values: dict[str, Any] = {setting.value: value for setting, value in given.items()}
        if Setting.MODEL in given:
            values["model"] = self.models.entry(str(given[Setting.MODEL]).strip()).name
        width, height = given.get(Setting.WIDTH), given.get(Setting.HEIGHT)
        if Setting.AR in given:
            if width is not None or height is not None:
                raise InvalidParams("Set an aspect ratio or a width and height, not both.")
            values.update(ar=str(AspectRatio.parse(given[Setting.AR])), width=None, height=None)
        elif width is not None or height is not None:
            values["ar"] = None
            max_side = min(MAX_SIZE, limits.max_size or MAX_SIZE)
            if max(width or 0, height or 0) > max_side:
                raise InvalidParams(f"Your largest side here is {max_side} pixels: set a smaller width and height.")
        for setting in (Setting.STEPS, Setting.HIRES_STEPS):
            steps = given.get(setting)
            if steps is not None and limits.max_steps is not None and steps > limits.max_steps:
                raise InvalidParams(f"Your limit here is {limits.max_steps} steps: set at most that.")
        if Setting.NEGATIVE_PROMPT in given:
            negative = str(given[Setting.NEGATIVE_PROMPT]).strip()
            parse_prompt_attention(negative)
            values["negative_prompt"] = negative or None
        if Setting.STYLE in given:
            if self.styles is None:
                raise InvalidParams("This bot keeps no styles.")
            picked = self.styles.pick(caller.guild_id, str(given[Setting.STYLE]))
            values["style"] = ", ".join(style.name for style in picked)
        upscaler = given.get(Setting.HIRES_UPSCALER)
        if upscaler is not None:
            known = {name.lower(): name for name in (*HIRES_UPSCALERS, *self.files.upscaler_names())}
            if str(upscaler).strip().lower() not in known:
                raise InvalidParams(f"No upscaler called `{str(upscaler)[:60]}` is installed: pick one Discord offers.")
            values["hires_upscaler"] = known[str(upscaler).strip().lower()]
        for off in (Setting.HIRES, Setting.FACE_FIX, Setting.QUIET):
            if off in given:
                values[off.value] = given[off] or None  # 0 or false: none kept
        return dataclasses.replace(updated, **values)  # type: ignore[arg-type]

    async def describe(self, caller: Caller, member: MemberSettings, heading: str) -> str:
        """Every setting /imagine would use here with no options, where each comes from, and the member's settings
        that do not apply here now (with why)."""
        limits = await self.quota.limits(caller.guild_id, caller.user_id, caller.role_ids)
        applied, notes = still_applicable(
            member,
            models=self.models,
            styles=self.styles,
            guild_id=caller.guild_id,
            limits=limits,
            upscalers=self.files.upscaler_names(),
        )
        lines = [heading, *(shown.line() for shown in self.shown(caller, applied)), *notes]
        lines.append("An option you give /imagine still wins. Change these with /settings, undo with `reset:`.")
        return "\n".join(fit_lines(lines, MESSAGE_MAX))

    def shown(self, caller: Caller, member: MemberSettings) -> list[Shown]:
        """The values /imagine takes when a member gives no option: theirs, else the channel's model, else the
        model's own defaults, else the bot's."""
        channel_model = self.models.channels.get(caller.channel_id) if self.models.channels is not None else None
        if channel_model is not None and self.models.catalog.get(channel_model) is None:
            channel_model = None
        pick = self.models.pick(member.model, caller.channel_id)
        wanted = pick.defaults
        if member.model is not None:
            model = Shown("Model", member.model, Source.MEMBER)
        elif channel_model is not None:
            model = Shown("Model", channel_model, Source.CHANNEL)
        else:
            default = self.models.default_entry
            model = Shown("Model", default.name if default is not None else "the bot's model", Source.BOT)
        engine = self.engine_ready()
        if member.ar is not None:
            size = Shown("Size", f"{member.ar} (about the model's pixel count)", Source.MEMBER)
        elif member.width is not None:
            size = Shown("Size", f"{member.width}×{member.height}", Source.MEMBER)
        elif wanted.width or wanted.height or engine is not None:
            native = pick.native_size(engine) if engine is not None else (0, 0)
            size = Shown("Size", f"{wanted.width or native[0]}×{wanted.height or native[1]}", Source.MODEL)
        else:
            size = Shown("Size", "the model's native size", Source.MODEL)

        server_upscaler = self.hires_upscaler_for(caller.guild_id)

        def switch(label: str, on: object, shown_on: str, shown_off: str) -> Shown:
            # An on/off setting: the member's when on, else the bot's default (off).
            return Shown(label, shown_on, Source.MEMBER) if on else Shown(label, shown_off, Source.BOT)

        return [
            model,
            size,
            _first("Steps", member.steps, wanted.steps, DEFAULT_STEPS),
            _first("CFG", member.cfg, wanted.cfg, DEFAULT_CFG),
            _first("Sampler", member.sampler, wanted.sampler, DEFAULT_SAMPLER),
            _first("Negative prompt", member.negative_prompt, wanted.negative_prompt, None, quote=True),
            _first("Style", member.style, None, None, quote=True),
            switch("Hires fix", member.hires, f"{member.hires or 0:g}×", "off"),
            _first("Hires denoising", member.hires_strength, wanted.hires_strength, DEFAULT_HIRES_STRENGTH),
            _first("Hires steps", member.hires_steps, wanted.hires_steps, "the job's steps"),
            _first("Hires upscaler", member.hires_upscaler, wanted.hires_upscaler, server_upscaler),
            switch("Face fix", member.face_fix, "on", "off"),
            switch("Results", member.quiet, "posted quietly (no ping)", "ping you"),
        ]


def _first(label: str, member: object, model: object, bot: object, *, quote: bool = False) -> Shown:
    """The member's value, else the model's, else the bot's (None: none)."""
    for value, source in ((member, Source.MEMBER), (model, Source.MODEL), (bot, Source.BOT)):
        if value is None or value == "":
            continue
        text = f"{value:g}" if isinstance(value, float) else str(value)
        return Shown(label, f"`{quoted(text)}`" if quote else text, source)
    return Shown(label, "none", Source.BOT)


def build_settings_command(service: SettingsService) -> app_commands.Command:  # type: ignore[type-arg]
    """The /settings slash command: no option shows the member's defaults; options set them."""

    @app_commands.command(name="settings", description="See or set your own defaults for /imagine (only you see this)")
    @app_commands.describe(
        model="Your default model here (a channel's default yields to it)",
        ar="Your default aspect ratio, at the model's native pixel count",
        width=f"Your default width, a multiple of 8 ({MIN_SIZE}–{MAX_SIZE}); set with height",
        height=f"Your default height, a multiple of 8 ({MIN_SIZE}–{MAX_SIZE}); set with width",
        steps=f"Your default denoising steps ({MIN_STEPS}–{MAX_STEPS})",
        cfg=f"Your default CFG scale ({MIN_CFG:g}–{MAX_CFG:g})",
        sampler="Your default sampler",
        negative_prompt="Your default negative prompt (used when you give none)",
        style="Your default styles here, comma-separated",
        hires="A hires fix on every /imagine of yours (1.5× or 2×), or off",
        hires_strength=f"How much the hires pass redraws ({MIN_HIRES_STRENGTH:g}–{MAX_HIRES_STRENGTH:g})",
        hires_steps=f"Steps of the hires pass ({MIN_STEPS}–{MAX_STEPS}; default the job's)",
        hires_upscaler="How the hires fix upscales before redrawing",
        face_fix="Redraw the faces of every image you draw (as ADetailer), on or off",
        quiet="Post your results without pinging you",
        reset="Clear one of your settings, or all of them",
    )
    @app_commands.choices(
        sampler=[app_commands.Choice(name=s, value=s) for s in SAMPLERS],
        ar=[app_commands.Choice(name=ratio, value=ratio) for ratio in ASPECT_CHOICES],
        reset=[app_commands.Choice(name=name, value=name) for name in RESETTABLE],
        hires=[app_commands.Choice(name=name, value=name) for name in HIRES_CHOICES],
    )
    async def settings(
        interaction: discord.Interaction,
        model: app_commands.Range[str, 1, 100] | None = None,
        ar: app_commands.Choice[str] | None = None,
        width: app_commands.Range[int, MIN_SIZE, MAX_SIZE] | None = None,
        height: app_commands.Range[int, MIN_SIZE, MAX_SIZE] | None = None,
        steps: app_commands.Range[int, MIN_STEPS, MAX_STEPS] | None = None,
        cfg: app_commands.Range[float, MIN_CFG, MAX_CFG] | None = None,
        sampler: app_commands.Choice[str] | None = None,
        negative_prompt: app_commands.Range[str, 1, MAX_PROMPT_CHARS] | None = None,
        style: app_commands.Range[str, 1, 200] | None = None,
        hires: app_commands.Choice[str] | None = None,
        hires_strength: app_commands.Range[float, MIN_HIRES_STRENGTH, MAX_HIRES_STRENGTH] | None = None,
        hires_steps: app_commands.Range[int, MIN_STEPS, MAX_STEPS] | None = None,
        hires_upscaler: app_commands.Range[str, 1, MAX_UPSCALER_NAME] | None = None,
        face_fix: bool | None = None,
        quiet: bool | None = None,
        reset: app_commands.Choice[str] | None = None,
    ) -> None:
        named = {
            Setting.MODEL: model,
            Setting.AR: ar.value if ar else None,
            Setting.WIDTH: width,
            Setting.HEIGHT: height,
            Setting.STEPS: steps,
            Setting.CFG: cfg,
            Setting.SAMPLER: sampler.value if sampler else None,
            Setting.NEGATIVE_PROMPT: negative_prompt,
            Setting.STYLE: style,
            Setting.HIRES: HIRES_CHOICES[hires.value] if hires else None,
            Setting.HIRES_STRENGTH: hires_strength,
            Setting.HIRES_STEPS: hires_steps,
            Setting.HIRES_UPSCALER: hires_upscaler,
            Setting.FACE_FIX: face_fix,
            Setting.QUIET: quiet,
        }
        change = SettingsChange({s: v for s, v in named.items() if v is not None}, reset.value if reset else None)
        caller, responder = caller_and_responder(interaction)
        await service.handle(caller, responder, change)

    @settings.autocomplete("model")
    async def model_autocomplete(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return service.models.choices(current)

    @settings.autocomplete("hires_upscaler")
    async def upscaler_autocomplete(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        names = (*HIRES_UPSCALERS, *service.files.upscaler_names())
        fitting = [n for n in names if current.lower() in n.lower() and len(n) <= MAX_UPSCALER_NAME]
        return [app_commands.Choice(name=n, value=n) for n in fitting][:25]

    @settings.autocomplete("style")
    async def style_autocomplete(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return style_choices(service.styles, interaction.guild_id, current) if service.styles else []

    return settings
