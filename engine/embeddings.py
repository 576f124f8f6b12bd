"""Textual-inversion embeddings from `SDBOT_EMBEDDINGS_DIR`, usable in prompts by their file name."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from core.network_files import NetworkFolder, embedding_hash

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Embeddings:
    """The embeddings loaded into a pipe's tokenizers, by name, with A1111's short hash of each file."""

    hashes: dict[str, str] = field(default_factory=dict)

    def used_in(self, texts: Iterable[str]) -> dict[str, str]:
        """The embeddings these prompts use (the tokenizer finds a name anywhere in the text), with hashes."""
        joined = "\n".join(texts)
        return {name: value for name, value in self.hashes.items() if name in joined}


def _load_sdxl(pipe: Any, name: str, path: Path) -> None:
    """SDXL embeddings hold one tensor per encoder: `clip_l` for the first, `clip_g` for the second."""
    state = load_file(str(path))
    if "clip_l" not in state or "clip_g" not in state:
        raise ValueError("not an SDXL embedding (it has no clip_l and clip_g tensors)")
    pairs = (("clip_l", pipe.text_encoder, pipe.tokenizer), ("clip_g", pipe.text_encoder_2, pipe.tokenizer_2))
    for key, encoder, _tokenizer in pairs:
        if state[key].shape[-1] != encoder.config.hidden_size:
            raise ValueError(
                f"its {key} vectors have {state[key].shape[-1]} values, the model needs {encoder.config.hidden_size}"
            )
    for key, encoder, tokenizer in pairs:
        pipe.load_textual_inversion(state[key], token=name, text_encoder=encoder, tokenizer=tokenizer)


def load_embeddings(pipe: Any, folder: NetworkFolder) -> Embeddings:
    """Load every embedding in the folder (A1111's `emb_params` or the diffusers format; SDXL's pair).

    One that does not fit the model (made for another family, or named like an existing word) is skipped
    with a warning: its name then stays plain text, as in A1111.
    """
    hashes: dict[str, str] = {}
    sdxl = getattr(pipe, "text_encoder_2", None) is not None
    for name, path in folder.files().items():
        try:
            if sdxl:
                _load_sdxl(pipe, name, path)
            else:
                pipe.load_textual_inversion(str(path), token=name)
        except Exception as exc:
            log.warning("embedding %s skipped: %s", path, exc)
            continue
        hashes[name] = embedding_hash(path)
    if hashes:
        log.info("loaded %d embeddings: %s", len(hashes), ", ".join(hashes))
    return Embeddings(hashes)
