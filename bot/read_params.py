"""The "Read parameters" message command: the A1111 infotext of an image on any message, and a button to run it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import discord
from discord import app_commands
from PIL import UnidentifiedImageError

from bot.attachments import IMAGE_TYPES, fetch_raw
from bot.buttons import ButtonSpec, Press, buttons_view
from bot.community_store import CommunityStore
from bot.intake import Intake, check_channel, ready_engine
from bot.jobs import Job
from engine.infotext import Infotext, parse_infotext
from engine.params import GenerationParams, InvalidParams
from engine.pngmeta import infotext_of, read_user_comment
from engine.wire import EngineReady

NO_IMAGE = "That message has no PNG, JPEG or WebP image to read parameters from."
NO_METADATA = (
    "That image carries no generation parameters: screenshots, editors and many sites drop them. Share the file"
    " as A1111 (or I) saved it."
)
DRAFT_GONE = "I have no record of those settings any more: use Read parameters on the image again."
_FIELD_MAX = 1024
_FIELDS_MAX = 24


def read_infotext(data: bytes, content_type: str) -> str | None:
    """The infotext an image file carries: a PNG's `parameters` chunk, a JPEG's or WebP's EXIF UserComment."""
    try:
        if content_type == "image/png":
            return infotext_of(data) or None
        return read_user_comment(data)
    except (UnidentifiedImageError, OSError, ValueError):
        return None


def infotext_embed(info: Infotext, filename: str) -> discord.Embed:
    """Every parameter the image carries; those this bot does not run are marked."""
    embed = discord.Embed(title=f"Parameters of {filename}"[:256], description=info.prompt[:4096] or "(no prompt)")
    if info.negative_prompt:
        embed.add_field(name="Negative prompt", value=info.negative_prompt[:_FIELD_MAX], inline=False)
    unknown = set(info.unknown_keys)
    for key, value in info.pairs[:_FIELDS_MAX]:
        name = f"{key} (not used here)" if key in unknown else key
        embed.add_field(name=name[:256], value=value[:_FIELD_MAX] or "—")
    return embed


class ReadParamsService:
    """Reads infotext back from images, and runs the settings it finds as a new job."""

    def __init__(
        self,
        *,
        intake: Intake,
        community: CommunityStore,
        engine_ready: Callable[[], EngineReady | None],
    ) -> None:
        self.intake = intake
        self.community = community
        self.engine_ready = engine_ready

    def _base(self) -> GenerationParams:
        """What an infotext without a size or sampler runs with: this model's native size and the defaults."""
        ready = self.engine_ready()
        if ready is None:
            return GenerationParams(prompt="")
        return GenerationParams(prompt="", width=ready.native_width, height=ready.native_height)

    async def read(self, interaction: discord.Interaction, message: discord.Message) -> None:
        """Answer privately with the parameters of the message's first image, and a Run button if they run here."""
        attachment = next((a for a in message.attachments if (a.content_type or "").split(";")[0] in IMAGE_TYPES), None)
        if attachment is None:
            await interaction.response.send_message(NO_IMAGE, ephemeral=True)
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            data = await fetch_raw(attachment)
        except InvalidParams as exc:
            await interaction.followup.send(str(exc), ephemeral=True)
            return
        kind = (attachment.content_type or "").split(";")[0]
        text = await asyncio.to_thread(read_infotext, data, kind)
        info = parse_infotext(text) if text else None
        if info is None:
            await interaction.followup.send(NO_METADATA, ephemeral=True)
            return
        embed = infotext_embed(info, attachment.filename)
        try:
            params = info.to_params(self._base())
        except InvalidParams as exc:
            await interaction.followup.send(f"I can't run these settings here: {exc}", embed=embed, ephemeral=True)
            return
        draft = await self.community.add_draft(interaction.user.id, params, self.intake.clock())
        view = buttons_view([ButtonSpec(Press("run", draft), "Run these settings", row=0, emoji="▶️")])
        await interaction.followup.send(embed=embed, view=view, ephemeral=True)

    async def run(self, interaction: discord.Interaction, press: Press) -> Job | None:
        """Queue the settings read from an image, for whoever pressed, through the normal intake."""
        params = await self.community.draft(press.job_id)
        if params is None:
            await interaction.response.send_message(DRAFT_GONE, ephemeral=True)
            return None
        try:
            self.intake.check_fits(params, ready_engine(self.engine_ready))
            channel_id = check_channel(interaction)
        except InvalidParams as exc:
            await interaction.response.send_message(str(exc), ephemeral=True)
            return None
        return await self.intake.accept(interaction, self.intake.new_job(interaction, params, channel_id))


def build_read_params_command(service: ReadParamsService) -> app_commands.ContextMenu:
    """The "Read parameters" entry in every message's Apps menu."""

    async def read_parameters(interaction: discord.Interaction, message: discord.Message) -> None:
        await service.read(interaction, message)

    return app_commands.ContextMenu(name="Read parameters", callback=read_parameters)
