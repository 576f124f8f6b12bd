"""What every new job is checked against before it is reserved: the model and LoRAs it names are installed, and its
prompts parse."""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.models import Models
from engine.network_files import NetworkFolder
from engine.params import GenerationParams
from engine.prompt_syntax import check_lora_names, check_network_kinds, parse_prompt_attention, split_loras


@dataclass(frozen=True)
class Installed:
    """The models folder and the LoRA folder as the bot sees them now (a remix or an old button may name a
    model or LoRA that was removed since, or a pasted infotext one that was never here)."""

    models: Models = field(default_factory=Models)
    loras: NetworkFolder = field(default_factory=lambda: NetworkFolder(None))

    def check(self, params: GenerationParams) -> None:
        """InvalidParams with a sentence (close matches included) when the job names what is not installed, or its
        prompts do not parse as A1111's syntax; the engine checks the same again, job by job."""
        if params.model:
            self.models.entry(params.model)
        check_network_kinds(params.prompt)
        text, tags = split_loras(params.prompt)
        for words in (text, params.negative_prompt):
            parse_prompt_attention(words)
        if tags:
            check_lora_names(tags, self.loras.names())
