"""🎛 Remix: a modal prefilled with a job's prompt and settings; submitting it runs the edited job.

The modal is not kept in memory: its custom_id names the job, and the submission is read from the
interaction alone, so a modal opened before a restart still works after it.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping
from dataclasses import replace

import discord

from bot.interactions.port import MESSAGE_MAX, Caller, Responder
from bot.pipeline.intake import Intake, ready_engine
from bot.results.buttons import Press
from bot.results.presses import UNKNOWN_JOB, requester_for
from core.a1111_samplers import sampler_pairs
from core.aspect import take_ar_flag
from core.infotext import HIRES_KEYS, hires_pairs, parse_pairs, quote, settings_changes
from core.jobs import Job
from core.params import MAX_PROMPT_CHARS, MAX_SEED, MAX_SIZE, GenerationParams, InvalidParams
from core.wire import EngineReady

MODAL_ID = re.compile(r"^sdbot:remix:(?P<job>[0-9a-f]{4,32})$")
SETTINGS_KEYS = ("Steps", "CFG scale", "Seed", "Sampler", "Schedule type", "Denoising strength", *HIRES_KEYS)


def settings_line(params: GenerationParams) -> str:
    """The settings input's text, written as A1111 writes them."""
    pairs = [
        ("Steps", str(params.steps)),
        ("CFG scale", f"{params.cfg:g}"),
        ("Seed", str(params.seed)),
        *sampler_pairs(params.sampler),
        *hires_pairs(params),
    ]
    return ", ".join(f"{key}: {quote(value)}" for key, value in pairs)


def remix_modal(job: Job) -> discord.ui.Modal:
    """The modal for one job: prompt, negative prompt, size (where it can change) and the other settings."""
    params = job.params
    modal = discord.ui.Modal(title="Remix", custom_id=f"sdbot:remix:{job.id}", timeout=None)
    modal.add_item(
        discord.ui.TextInput(
            label="Prompt",
            custom_id="prompt",
            style=discord.TextStyle.paragraph,
            default=params.prompt,
            max_length=MAX_PROMPT_CHARS,
        )
    )
    modal.add_item(
        discord.ui.TextInput(
            label="Negative prompt",
            custom_id="negative",
            style=discord.TextStyle.paragraph,
            default=params.negative_prompt or None,
            required=False,
            max_length=MAX_PROMPT_CHARS,
        )
    )
    # A size that follows from the image the job works from is not the member's to edit.
    if not params.mode.sized_by_source:
        modal.add_item(
            discord.ui.TextInput(
                label="Size (width x height)",
                custom_id="size",
                default=f"{params.width}x{params.height}",
                max_length=11,
            )
        )
    modal.add_item(
        discord.ui.TextInput(
            label="Steps, CFG scale, seed (-1: random), sampler",
            custom_id="settings",
            default=settings_line(params),
            max_length=200,
        )
    )
    # Not kept in discord.py's view store: the submission is answered from its custom_id (see module doc).
    modal.stop()
    return modal


def remixed_params(
    params: GenerationParams, values: Mapping[str, str], seed_source: random.Random, area: int
) -> GenerationParams:
    """`params` with the modal's edits, checked; InvalidParams with a sentence saying what to change. A `--ar W:H` in
    the prompt sizes the job at `area` pixels (its model's native count) in that shape."""
    pairs = parse_pairs(values.get("settings", ""))
    if values.get("settings", "").strip() and not pairs:
        raise InvalidParams(f"Write the settings as A1111 does, e.g. `{settings_line(params)}`.")
    unknown = [key for key, _ in pairs if key not in SETTINGS_KEYS]
    if unknown:
        raise InvalidParams(
            f"I don't know the setting {unknown[0]!r}: use Steps, CFG scale, Seed, Sampler and Schedule type"
            " (and for a hires fix Hires upscale, Hires steps, Hires upscaler and Denoising strength)."
        )
    if dict(pairs).get("Seed", "").strip() == "-1":
        pairs = tuple((k, str(seed_source.randrange(MAX_SEED + 1)) if k == "Seed" else v) for k, v in pairs)
    prompt, ratio = take_ar_flag(values.get("prompt", params.prompt))
    size = values.get("size", "").strip().lower().replace(" ", "").replace("×", "x")
    if ratio is not None:
        if size and size != f"{params.width}x{params.height}":
            raise InvalidParams("Give `--ar W:H` or a new size, not both: put the size back, or take the --ar out.")
        if params.mode.sized_by_source:
            raise InvalidParams("This job's size follows the image it works from: take the --ar out.")
        width, height = ratio.size(area, MAX_SIZE)
        pairs += (("Size", f"{width}x{height}"),)
    elif "size" in values:
        pairs += (("Size", size),)
    changes = settings_changes(pairs)
    if values.get("settings", "").strip() and "Hires upscale" not in dict(pairs):
        changes["hires"] = 0.0  # taken out of the settings: no hires fix
    edited = replace(
        params,
        prompt=prompt.strip(),
        negative_prompt=values.get("negative", "").strip(),
        **changes,  # type: ignore[arg-type]
    )
    return edited.validate()


def echo(values: Mapping[str, str]) -> str:
    """The member's edit, quoted back so a refused submission loses nothing."""
    lines = [values.get("prompt", "")]
    if values.get("negative"):
        lines.append(f"Negative prompt: {values['negative']}")
    lines += [values[key] for key in ("size", "settings") if values.get(key)]
    return "\n".join(lines).replace("```", "ˋˋˋ")


class RemixService:
    """Opens the modal on a 🎛 press and turns its submission into a job through the normal intake."""

    def __init__(
        self,
        *,
        intake: Intake,
        engine_ready: Callable[[], EngineReady | None],
        seed_source: random.Random | None = None,
    ) -> None:
        self.intake = intake
        self.engine_ready = engine_ready
        self.seed_source = seed_source or random.SystemRandom()

    async def press(self, caller: Caller, responder: Responder, press: Press) -> None:
        """Open the remix modal for the pressed job."""
        job = await self.intake.store.get(press.job_id)
        if job is None:
            await responder.reply_privately(UNKNOWN_JOB)
            return
        await responder.open_modal(remix_modal(job))

    async def submit(self, caller: Caller, responder: Responder, job_id: str) -> Job | None:
        """Run the edited job, or answer with a sentence and the member's edit to copy back."""
        job = await self.intake.store.get(job_id)
        if job is None:
            await responder.reply_privately(UNKNOWN_JOB)
            return None
        values = caller.values
        try:
            ready = ready_engine(self.engine_ready)
            width, height = self.intake.installed.models.pick(job.params.model or None, None).native_size(ready)
            area = width * height
            params = remixed_params(job.params, values, self.seed_source, area)
            self.intake.check_fits(params, ready)
            child = job.remixed(requester_for(caller, job, self.intake.clock()), params)
        except InvalidParams as exc:
            sentence = f"{exc}\nYour edit, to copy back:\n"
            room = MESSAGE_MAX - len(sentence) - 8
            await responder.reply_privately(f"{sentence}```\n{echo(values)[:room]}\n```")
            return None
        return await self.intake.accept(caller, responder, child)
