"""/settings: a member sees and sets their own defaults for /imagine, privately; each value shown with its source."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import discord
from discord import app_commands

from bot.interactions.adapter import caller_and_responder
from bot.interactions.port import MESSAGE_MAX, Caller, Responder, fit_lines
from bot.limits.quota import Quota
from bot.member_settings.applicable import still_applicable
from bot.member_settings.store import MemberSettingsStore
from bot.models.picker import Models
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
    "quiet": (Setting.QUIET,),
}


@dataclass(frozen=True)
class SettingsChange:
    """What a member asked /settings to change; None where they named nothing."""

    model: str | None = None
    ar: str | None = None
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    cfg: float | None = None
    sampler: str | None = None
    negative_prompt: str | None = None
    style: str | None = None
    hires: float | None = None  # 0: off
    hires_strength: float | None = None
    hires_steps: int | None = None
    hires_upscaler: str | None = None
    quiet: bool | None = None
    reset: str | None = None

    @property
    def empty(self) -> bool:
        return all(value is None for value in dataclasses.asdict(self).values())


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
    ) -> None:
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
        values: dict[str, object] = {}
        if change.model is not None:
            values["model"] = self.models.entry(change.model.strip()).name
        if change.ar is not None or change.width is not None or change.height is not None:
            if change.ar is not None and (change.width is not None or change.height is not None):
                raise InvalidParams("Set an aspect ratio or a width and height, not both.")
            if change.ar is not None:
                values.update(ar=str(AspectRatio.parse(change.ar)), width=None, height=None)
            else:
                values.update(ar=None, width=change.width, height=change.height)
                max_side = min(MAX_SIZE, limits.max_size or MAX_SIZE)
                if max(change.width or 0, change.height or 0) > max_side:
                    raise InvalidParams(f"Your largest side here is {max_side} pixels: set a smaller width and height.")
        if change.steps is not None:
            if limits.max_steps is not None and change.steps > limits.max_steps:
                raise InvalidParams(f"Your limit here is {limits.max_steps} steps: set at most that.")
            values["steps"] = change.steps
        if change.cfg is not None:
            values["cfg"] = change.cfg
        if change.sampler is not None:
            values["sampler"] = change.sampler
        if change.negative_prompt is not None:
            negative = change.negative_prompt.strip()
            parse_prompt_attention(negative)
            values["negative_prompt"] = negative or None
        if change.style is not None:
            if self.styles is None:
                raise InvalidParams("This bot keeps no styles.")
            values["style"] = ", ".join(style.name for style in self.styles.pick(caller.guild_id, change.style))
        if change.hires is not None:
            values["hires"] = change.hires or None
        for name in ("hires_strength", "hires_steps", "hires_upscaler"):
            if getattr(change, name) is not None:
                values[name] = getattr(change, name)
        if change.quiet is not None:
            values["quiet"] = change.quiet or None
        return dataclasses.replace(updated, **values)  # type: ignore[arg-type]

    async def describe(self, caller: Caller, member: MemberSettings, heading: str) -> str:
        """Every setting /imagine would use here with no options, where each comes from, and the member's settings
        that do not apply here now (with why)."""
        limits = await self.quota.limits(caller.guild_id, caller.user_id, caller.role_ids)
        applied, notes = still_applicable(
            member, models=self.models, styles=self.styles, guild_id=caller.guild_id, limits=limits
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
        hires_source = Source.MEMBER if member.hires else Source.BOT
        quiet = Shown("Results", "posted quietly (no ping)" if member.quiet else "ping you", Source.BOT)
        if member.quiet:
            quiet = dataclasses.replace(quiet, source=Source.MEMBER)
        return [
            model,
            size,
            _first("Steps", member.steps, wanted.steps, DEFAULT_STEPS),
            _first("CFG", member.cfg, wanted.cfg, DEFAULT_CFG),
            _first("Sampler", member.sampler, wanted.sampler, DEFAULT_SAMPLER),
            _first("Negative prompt", member.negative_prompt, wanted.negative_prompt, None, quote=True),
            _first("Style", member.style, None, None, quote=True),
            Shown("Hires fix", f"{member.hires:g}×" if member.hires else "off", hires_source),
            _first("Hires denoising", member.hires_strength, wanted.hires_strength, DEFAULT_HIRES_STRENGTH),
            _first("Hires steps", member.hires_steps, wanted.hires_steps, "the job's steps"),
            _first("Hires upscaler", member.hires_upscaler, wanted.hires_upscaler, DEFAULT_HIRES_UPSCALER),
            quiet,
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
        quiet="Post your results without pinging you",
        reset="Clear one of your settings, or all of them",
    )
    @app_commands.choices(
        sampler=[app_commands.Choice(name=s, value=s) for s in SAMPLERS],
        ar=[app_commands.Choice(name=ratio, value=ratio) for ratio in ASPECT_CHOICES],
        reset=[app_commands.Choice(name=name, value=name) for name in RESETTABLE],
        hires=[app_commands.Choice(name=name, value=name) for name in HIRES_CHOICES],
        hires_upscaler=[app_commands.Choice(name=name, value=name) for name in HIRES_UPSCALERS],
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
        hires_upscaler: app_commands.Choice[str] | None = None,
        quiet: bool | None = None,
        reset: app_commands.Choice[str] | None = None,
    ) -> None:
        change = SettingsChange(
            model=model,
            ar=ar.value if ar else None,
            width=width,
            height=height,
            steps=steps,
            cfg=cfg,
            sampler=sampler.value if sampler else None,
            negative_prompt=negative_prompt,
            style=style,
            hires=HIRES_CHOICES[hires.value] if hires else None,
            hires_strength=hires_strength,
            hires_steps=hires_steps,
            hires_upscaler=hires_upscaler.value if hires_upscaler else None,
            quiet=quiet,
            reset=reset.value if reset else None,
        )
        caller, responder = caller_and_responder(interaction)
        await service.handle(caller, responder, change)

    @settings.autocomplete("model")
    async def model_autocomplete(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return service.models.choices(current)

    @settings.autocomplete("style")
    async def style_autocomplete(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return style_choices(service.styles, interaction.guild_id, current) if service.styles else []

    return settings
