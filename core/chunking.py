"""A prompt's 75-token chunks as A1111 makes them, without torch: the engine encodes them, the bot counts them.

A prompt of any length becomes one or more chunks of 77 tokens (BOS, 75 tokens, EOS); BREAK ends a chunk early.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.checkpoint_header import CONFIGS
from core.params import MAX_PROMPT_CHUNKS, InvalidParams
from core.prompt_syntax import Fragment, parse_prompt_attention

CHUNK_LENGTH = 75
# A1111's "comma padding backtrack": a chunk that fills up within this many tokens of a comma breaks there.
COMMA_BACKTRACK = 20
# CLIP's tokenizer as it ships for single-file SD 1.x models; SD 2.x's and both of SDXL's have the same vocabulary
# and merges, so a prompt takes as many chunks in every family (embeddings aside: only the engine knows them).
SD_TOKENIZER = CONFIGS / "sd15" / "tokenizer"


@dataclass(frozen=True)
class Chunk:
    """77 token ids and the multiplier of each one's embedding."""

    tokens: tuple[int, ...]
    multipliers: tuple[float, ...]


@dataclass(frozen=True)
class SpecialTokens:
    """The ids a chunk is framed and padded with; SD 1.x pads with EOS, SD 2.x and SDXL's OpenCLIP with 0."""

    bos: int
    eos: int
    pad: int
    comma: int | None

    @classmethod
    def of(cls, tokenizer: Any) -> SpecialTokens:
        """Read them from a CLIP tokenizer."""
        eos = int(tokenizer.eos_token_id)
        pad = tokenizer.pad_token_id
        # A missing token converts to the unknown token's id; a vocabulary without ",</w>" has no comma.
        comma = tokenizer.convert_tokens_to_ids(",</w>")
        return cls(
            bos=int(tokenizer.bos_token_id),
            eos=eos,
            pad=eos if pad is None else int(pad),
            comma=None if comma == tokenizer.unk_token_id else int(comma),
        )

    def chunk(self, tokens: list[int], multipliers: list[float]) -> Chunk:
        """BOS, the tokens, EOS, then padding to 77; framing and padding weigh 1."""
        padding = CHUNK_LENGTH - len(tokens)
        return Chunk(
            tokens=(self.bos, *tokens, self.eos, *[self.pad] * padding),
            multipliers=(1.0, *multipliers, 1.0, *[1.0] * padding),
        )


def embedding_lengths(tokenizer: Any) -> dict[int, int]:
    """The first token id of each textual-inversion embedding and its number of vectors (`name`, `name_1`, …)."""
    added = tokenizer.added_tokens_encoder
    lengths = {}
    for token, first in added.items():
        count = 1
        while f"{token}_{count}" in added:
            count += 1
        if count > 1:
            lengths[first] = count
    return lengths


def chunk_fragments(
    fragments: Sequence[Fragment],
    token_ids: Sequence[Sequence[int]],
    special: SpecialTokens,
    embeddings: Mapping[int, int] | None = None,
) -> list[Chunk]:
    """A1111's `tokenize_line`: fill 75-token chunks, break at BREAK, and move a trailing clause past a comma.

    An embedding's vectors (`embeddings`: first token id → count) are never split across two chunks.
    """
    embeddings = embeddings or {}
    chunks: list[Chunk] = []
    tokens: list[int] = []
    multipliers: list[float] = []
    last_comma = -1

    def next_chunk() -> None:
        nonlocal tokens, multipliers, last_comma
        chunks.append(special.chunk(tokens, multipliers))
        tokens, multipliers, last_comma = [], [], -1

    for fragment, ids in zip(fragments, token_ids, strict=True):
        if fragment.is_break:
            next_chunk()
            continue
        position = 0
        while position < len(ids):
            token = ids[position]
            if token == special.comma:
                last_comma = len(tokens)
            elif len(tokens) == CHUNK_LENGTH and last_comma != -1 and len(tokens) - last_comma <= COMMA_BACKTRACK:
                cut = last_comma + 1
                moved_tokens, moved_multipliers = tokens[cut:], multipliers[cut:]
                tokens, multipliers = tokens[:cut], multipliers[:cut]
                next_chunk()
                tokens, multipliers = moved_tokens, moved_multipliers
            if len(tokens) == CHUNK_LENGTH:
                next_chunk()
            length = min(embeddings.get(token, 1), len(ids) - position)
            if len(tokens) + length > CHUNK_LENGTH:
                next_chunk()
            tokens += ids[position : position + length]
            multipliers += [fragment.weight] * length
            position += length
    if tokens or not chunks:
        next_chunk()
    return chunks


def text_chunks(
    tokenizer: Any,
    text: str,
    convert: Callable[[str], str] = lambda words: words,
    embeddings: Mapping[int, int] | None = None,
) -> list[Chunk]:
    """The chunks of one prompt (without its extra-network tags): its weighted fragments, each tokenized after
    `convert` (the engine's textual-inversion renaming), then filled into chunks by `chunk_fragments`."""
    fragments = parse_prompt_attention(text)
    texts = [convert(f.text) if not f.is_break else f.text for f in fragments]
    # No warning that a text is longer than the model's 77 tokens: it is cut into chunks, not truncated.
    ids = tokenizer(texts, truncation=False, add_special_tokens=False, verbose=False)["input_ids"]
    return chunk_fragments(fragments, ids, SpecialTokens.of(tokenizer), embeddings)


def check_chunk_count(what: str, count: int) -> None:
    """InvalidParams when the prompt or negative prompt (`what`) takes more chunks than a job may encode."""
    if count > MAX_PROMPT_CHUNKS:
        raise InvalidParams(
            f"The {what} takes {count} chunks of {CHUNK_LENGTH} tokens (each BREAK starts a new one): shorten it to"
            f" {MAX_PROMPT_CHUNKS} chunks ({MAX_PROMPT_CHUNKS * CHUNK_LENGTH} tokens) or fewer."
        )


class ChunkCounter:
    """Counts a prompt's chunks with CLIP's shipped tokenizer, loaded at the first count; safe from several threads."""

    def __init__(self, folder: Path = SD_TOKENIZER) -> None:
        self.folder = folder
        self._tokenizer: Any = None
        # One thread at a time: a fast tokenizer sets its truncation and padding on each call.
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        """Whether the tokenizer is loaded already."""
        return self._tokenizer is not None

    def load(self) -> None:
        """Load the tokenizer now (blocking: a second or more, most of it importing transformers)."""
        with self._lock:
            self._load()

    def _load(self) -> None:
        if self._tokenizer is None:
            # Imported here, not at the top: the bot pays for it off its event loop, once.
            from transformers import CLIPTokenizer

            self._tokenizer = CLIPTokenizer.from_pretrained(self.folder)

    def count(self, text: str) -> int:
        """How many chunks `text` takes (blocking; the first call loads the tokenizer unless `load` did)."""
        with self._lock:
            self._load()
            return len(text_chunks(self._tokenizer, text))
