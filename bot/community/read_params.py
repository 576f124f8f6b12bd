"""The "Read parameters" message command: the A1111 infotext of an image on any message, and a button to run it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import replace

import discord
from discord import app_commands

from bot.community.store import CommunityStore
from bot.imagine.attachments import IMAGE_TYPES, AttachmentInfo, fetch_raw
from bot.interactions.adapter import caller_and_responder
from bot.interactions.port import Caller, Responder
from bot.pipeline.intake import Intake, check_channel, ready_engine
from bot.results.buttons import ButtonSpec, JobAction, Press, buttons_view
from bot.results.render import clip
from core.infotext import Infotext, parse_infotext
from core.jobs import Job
from core.params import GenerationParams, InvalidParams
from core.pngmeta import MAX_INFOTEXT_CHARS, InfotextTooLong, embedded_infotext
from core.wire import EngineReady

NO_IMAGE = "That message has no PNG, JPEG or WebP image to read parameters from."
NO_METADATA = (
    "That image carries no generation parameters: screenshots, editors and many sites drop them. Share the file"
    " as A1111 (or I) saved it."
)
DRAFT_GONE = "I have no record of those settings any more: use Read parameters on the image again."
TOO_LONG = (
    f"That image carries more than {MAX_INFOTEXT_CHARS // 1024} KiB of text where its parameters belong, far more"
    " than any real infotext, so I won't read it. Share the file as A1111 (or I) saved it."
)
# Discord's embed limits (DESIGN.md).
_TITLE_MAX, _DESCRIPTION_MAX, _FIELDS_MAX, _NAME_MAX, _VALUE_MAX, _EMBED_MAX = 256, 4096, 25, 256, 1024, 6000
# However many parameters come first, the prompt keeps room for this much of itself.
_PROMPT_ROOM = 1024
# Room for the footer that counts the parameters left out.
_FOOTER_ROOM = 32


def read_infotext(data: bytes, content_type: str) -> Infotext | None:
    """The infotext an image file carries, parsed; None without one, InfotextTooLong past the cap (blocking)."""
    text = embedded_infotext(data, content_type)
    return parse_infotext(text) if text else None


def infotext_embed(info: Infotext, filename: str) -> discord.Embed:
    """Every parameter the image carries, those this bot does not run marked, cut to Discord's embed limits."""
    title = clip(f"Parameters of {filename}", _TITLE_MAX)
    prompt = info.prompt if info.prompt.strip() else "(no prompt)"
    unknown = set(info.unknown_keys)
    fields = [("Negative prompt", info.negative_prompt)] if info.negative_prompt.strip() else []
    fields += [(f"{key} (not used here)" if key in unknown else key, value) for key, value in info.pairs]
    # Fields come first, in order, as far as they fit; what is cut says "…", and the footer counts what is left out.
    room = _EMBED_MAX - len(title) - _FOOTER_ROOM - min(len(prompt), _PROMPT_ROOM)
    shown: list[tuple[str, str]] = []
    for name, value in fields[:_FIELDS_MAX]:
        field = (clip(name, _NAME_MAX), clip(value, _VALUE_MAX) if value.strip() else "—")
        if len(field[0]) + len(field[1]) > room:
            break
        shown.append(field)
        room -= len(field[0]) + len(field[1])
    footer = f"({len(fields) - len(shown)} more not shown)" if len(shown) < len(fields) else ""
    used = len(title) + len(footer) + sum(len(name) + len(value) for name, value in shown)
    embed = discord.Embed(title=title, description=clip(prompt, min(_DESCRIPTION_MAX, _EMBED_MAX - used)))
    for name, value in shown:
        embed.add_field(name=name, value=value, inline=name != "Negative prompt")
    if footer:
        embed.set_footer(text=footer)
    return embed


class ReadParamsService:
    """Reads infotext back from images, and runs the settings it finds as a new job."""

    def __init__(
        self,
        *,
        intake: Intake,
        community: CommunityStore,
        engine_ready: Callable[[], EngineReady | None],
        vae_for: Callable[[int | None], str] = lambda guild_id: "",
    ) -> None:
        self.intake = intake
        self.community = community
        self.engine_ready = engine_ready
        # The VAE the default model decodes with in a server: read settings run on it, as /imagine's would.
        self.vae_for = vae_for

    def _base(self) -> GenerationParams:
        """What an infotext without a size or sampler runs with: this model's native size and the defaults."""
        ready = self.engine_ready()
        if ready is None:
            return GenerationParams(prompt="")
        return GenerationParams(prompt="", width=ready.native_width, height=ready.native_height)

    async def read(self, caller: Caller, responder: Responder, attachments: Sequence[AttachmentInfo]) -> None:
        """Answer privately with the parameters of a message's first image, and a Run button if they run here."""
        attachment = next((a for a in attachments if (a.content_type or "").split(";")[0] in IMAGE_TYPES), None)
        if attachment is None:
            await responder.reply_privately(NO_IMAGE)
            return
        await responder.think(private=True)
        try:
            data = await fetch_raw(attachment)
        except InvalidParams as exc:
            await responder.reply_privately(str(exc))
            return
        kind = (attachment.content_type or "").split(";")[0]
        try:
            # Off the event loop: decoding the file and parsing up to 16 KiB of text must not stall the gateway.
            info = await asyncio.to_thread(read_infotext, data, kind)
        except InfotextTooLong:
            await responder.reply_privately(TOO_LONG)
            return
        if info is None:
            await responder.reply_privately(NO_METADATA)
            return
        embed = infotext_embed(info, attachment.filename)
        try:
            params = info.to_params(self._base())
        except InvalidParams as exc:
            await responder.reply_privately(f"I can't run these settings here: {exc}", embed=embed)
            return
        draft = await self.community.add_draft(caller.user_id, params, self.intake.clock())
        view = buttons_view([ButtonSpec(Press(JobAction.RUN, draft), "Run these settings", row=0, emoji="▶️")])
        await responder.reply_privately(embed=embed, view=view)

    async def run(self, caller: Caller, responder: Responder, press: Press) -> Job | None:
        """Queue the settings read from an image, for whoever pressed, through the normal intake."""
        params = await self.community.draft(press.job_id)
        if params is None:
            await responder.reply_privately(DRAFT_GONE)
            return None
        params = replace(params, vae=self.vae_for(caller.guild_id))
        try:
            self.intake.check_fits(params, ready_engine(self.engine_ready))
            channel_id = check_channel(caller)
        except InvalidParams as exc:
            await responder.reply_privately(str(exc))
            return None
        return await self.intake.accept(caller, responder, self.intake.new_job(caller, params, channel_id))


def build_read_params_command(service: ReadParamsService) -> app_commands.ContextMenu:
    """The "Read parameters" entry in every message's Apps menu."""

    async def read_parameters(interaction: discord.Interaction, message: discord.Message) -> None:
        caller, responder = caller_and_responder(interaction)
        await service.read(caller, responder, [AttachmentInfo.of(a) for a in message.attachments])

    return app_commands.ContextMenu(name="Read parameters", callback=read_parameters)
