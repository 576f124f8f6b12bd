"""What every new job is checked against before it is reserved: the model and LoRAs it names are installed, and its
prompts parse and keep to this bot's bounds."""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.models.picker import Models
from bot.pipeline.model_files import ModelFiles
from bot.pipeline.networks import Networks
from core.chunking import ChunkCounter, check_chunk_count
from core.params import DEFAULT_MAX_LORAS, HIRES_UPSCALERS, LANCZOS, GenerationParams, InvalidParams, JobMode
from core.prompt_schedule import check_schedule
from core.prompt_syntax import check_lora_count, check_lora_names, check_network_kinds, listed_names, split_loras


@dataclass(frozen=True)
class Installed:
    """The models folder and the LoRA folder as the bot sees them now (a remix or an old button may name a
    model or LoRA that was removed since, or a pasted infotext one that was never here), and the prompt bounds."""

    models: Models = field(default_factory=Models)
    loras: Networks = field(default_factory=Networks)
    max_loras: int = DEFAULT_MAX_LORAS
    chunks: ChunkCounter = field(default_factory=ChunkCounter)
    files: ModelFiles = field(default_factory=ModelFiles)

    def load(self) -> None:
        """Load what the checks need and is slow to load (the tokenizer), so that no member's job waits for it: an
        interaction has 3 s to be answered. Blocking: call it off the event loop."""
        self.chunks.load()

    def _check_upscaler(self, name: str, built_in: tuple[str, ...]) -> None:
        """InvalidParams naming what is installed when `name` is neither built in nor a model in the folder."""
        installed = (*built_in, *self.files.upscaler_names())
        if name not in installed:
            raise InvalidParams(f"No upscaler called `{name[:60]}` is installed: use {listed_names(list(installed))}.")

    def check(self, params: GenerationParams) -> None:
        """InvalidParams with a sentence (close matches included) when the job names what is not installed, or its
        prompts do not parse as A1111's syntax or go past a bound; the engine checks the prompts again, job by job.

        Blocking (it reads the LoRA folder and tokenizes): call it off the event loop.
        """
        if params.model:
            self.models.entry(params.model)
        if params.hires:
            self._check_upscaler(params.hires_upscaler, HIRES_UPSCALERS)
        if params.mode is JobMode.UPSCALE:
            self._check_upscaler(params.upscaler, (LANCZOS,))
        check_network_kinds(params.prompt)
        text, tags = split_loras(params.prompt)
        check_lora_count(tags, self.max_loras)
        if tags:
            check_lora_names(tags, self.loras.lora_names())
        for what, words in (("prompt", text), ("negative prompt", params.negative_prompt)):
            check_chunk_count(what, self.chunks.count(words))
            # A1111 would clamp an edit past the last step, so it never happens: the member is told instead.
            check_schedule(words, params.steps, params.second_pass_steps)
