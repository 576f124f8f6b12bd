"""What members read: acknowledgement, progress and result messages (pure functions, no I/O)."""

from __future__ import annotations

from collections.abc import Sequence

import discord

from core.jobs import Job
from core.wire import JobResult

# Discord's embed limits: field values hold 1024 characters, descriptions 4096.
_FIELD_MAX = 1024
_DESCRIPTION_MAX = 4096
_BAR_CELLS = 12
SPOILER_PREFIX = "SPOILER_"


def clip(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, ending in "…" when cut (Discord refuses a message over any limit)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def queued_text(position: int, start_at: float | None = None, now: float = 0.0, held: str | None = None) -> str:
    """The acknowledgement: where the job stands in line and, when it is not about to start, when it will; or
    why it waits however short the line is (`held`: its server's queue is paused)."""
    if held is not None:
        return f"⏸ Queued, but {held}: your job starts once it is resumed."
    text = (
        "⏳ Queued — you're next"
        if position <= 1
        else f"⏳ Queued — position {position} in line ({position - 1} ahead of you)"
    )
    if start_at is not None and start_at - now >= 5:
        text += f", starting <t:{round(start_at)}:R>"
    return text + "."


WORKERS_UNREACHABLE = (
    "⏸ The GPU workers are unreachable at the moment: your job is kept, and goes on once they are back."
)


def cancelled_text(by_id: int, charged: bool = False) -> str:
    """The status of a cancelled job; one cancelled while drawing still counts against its member's limits."""
    text = f"❌ Cancelled by <@{by_id}>."
    return text + " It had started drawing, so it still counts against the limits." if charged else text


def progress_text(step: int, total: int) -> str:
    """A step counter with a bar, edited into the acknowledgement while the job runs."""
    total = max(total, 1)
    filled = round(_BAR_CELLS * min(step, total) / total)
    bar = "█" * filled + "░" * (_BAR_CELLS - filled)
    return f"🎨 Generating — step {step} of {total}\n`{bar}`"


def starting_text() -> str:
    return "🎨 Generating — starting…"


def done_text(seconds: float, result_url: str) -> str:
    return f"✅ Done in {seconds:.1f} s — {result_url}"


# Room for the failure sentence in a 2,000-character message that also pings the member.
_SENTENCE_MAX = 1900


def failed_text(sentence: str) -> str:
    """Why a job produced nothing; the sentence may come from the engine, so it is clipped to fit a message."""
    return f"❌ {clip(sentence, _SENTENCE_MAX)}"


def withheld_text(withheld: int, total: int) -> str:
    """Why images are missing from a result: the safety checker flagged them and this channel withholds them."""
    if total == 1:
        what = "The safety checker flagged this image"
    elif withheld == total:
        what = "The safety checker flagged these images"
    else:
        what = f"The safety checker flagged {withheld} of these {total} images"
    them = "it" if withheld == 1 else "them"
    return f"🚫 {what}, so I'm not posting {them} here: try another prompt or seed."


def result_file_stems(job: Job, result: JobResult) -> list[str]:
    """One file per image (the extension follows its format), named after the job and seed."""
    return [f"sdbot-{job.id}-{image.seed}" for image in result.images]


def settings_embed(
    job: Job, seeds: Sequence[int], model_name: str | None, colour: discord.Colour | None = None
) -> discord.Embed:
    """The prompt and every setting that draws these images again: the one layout results and shares use."""
    params = job.params
    embed = discord.Embed(description=clip(params.prompt, _DESCRIPTION_MAX), colour=colour or discord.Colour.blurple())
    if params.negative_prompt:
        embed.add_field(name="Negative prompt", value=clip(params.negative_prompt, _FIELD_MAX), inline=False)
    embed.add_field(name="Seed" if len(seeds) == 1 else "Seeds", value=", ".join(str(seed) for seed in seeds))
    embed.add_field(name="Steps", value=str(params.steps))
    embed.add_field(name="CFG scale", value=f"{params.cfg:g}")
    embed.add_field(name="Sampler", value=params.sampler)
    if params.clip_skip > 1:
        embed.add_field(name="Clip skip", value=str(params.clip_skip))
    width, height = params.output_size
    embed.add_field(name="Size", value=f"{width}×{height}")
    if params.hires:
        embed.add_field(name="Hires fix", value=f"{params.hires:g}× from {params.width}×{params.height}")
    if model_name is not None:
        embed.add_field(name="Model", value=clip(model_name, _FIELD_MAX))
    if params.needs_source:
        embed.add_field(name="Denoising strength", value=f"{params.strength:g}")
    return embed


def result_embed(job: Job, result: JobResult) -> discord.Embed:
    """Everything needed to reproduce the images, how long they took, and who asked."""
    embed = settings_embed(job, [image.seed for image in result.images], result.model.name)
    embed.add_field(name="Time", value=f"{result.seconds:.1f} s")
    embed.add_field(name="Asked by", value=f"<@{job.user_id}>")
    embed.set_footer(text=f"job {job.id}")
    return embed
