"""Text conditioning as A1111 builds it: weighted fragments, 75-token chunks, clip skip, SD 1.x/2.x and SDXL.

A prompt of any length becomes one or more chunks of 77 tokens (BOS, 75 tokens, EOS), each encoded on
its own and concatenated along the sequence axis; every row of a batch has as many chunks as the longest.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from core.chunking import Chunk, SpecialTokens, embedding_lengths, text_chunks


@dataclass(frozen=True)
class Encoder:
    """One text encoder with its tokenizer, and which hidden layer it hands the UNet."""

    tokenizer: Any
    model: Any
    layer: int  # counted from the end: 1 is the last layer, 2 the penultimate
    normalize: bool  # SD 1.x/2.x apply the final layer norm to a skipped layer; SDXL does not
    pooled: bool = False  # SDXL's second encoder also gives the pooled, projected embedding


def encoders(pipe: Any, clip_skip: int) -> tuple[Encoder, ...]:
    """The pipe's encoders: SD 1.x takes the last layer minus clip skip, SD 2.x its last, SDXL both penultimate."""
    if getattr(pipe, "text_encoder_2", None) is not None:
        # A1111 ignores clip skip for SDXL: both encoders always give their penultimate layer.
        first = (Encoder(pipe.tokenizer, pipe.text_encoder, 2, False),) if pipe.text_encoder is not None else ()
        return (*first, Encoder(pipe.tokenizer_2, pipe.text_encoder_2, 2, False, pooled=True))
    special = SpecialTokens.of(pipe.tokenizer)
    # SD 2.x's OpenCLIP (the tokenizer pads with 0, not EOS) is converted already cut at its penultimate layer,
    # and A1111 ignores clip skip for it.
    layer = max(clip_skip, 1) if special.pad == special.eos else 1
    return (Encoder(pipe.tokenizer, pipe.text_encoder, layer, True),)


def _prompt_chunks(pipe: Any, encoder: Encoder, text: str) -> list[Chunk]:
    tokenizer = encoder.tokenizer
    # Textual-inversion names become their vector tokens (`name name_1 …`) as the pipelines' own encoding does.
    convert = partial(pipe.maybe_convert_prompt, tokenizer=tokenizer)
    return text_chunks(tokenizer, text, convert, embedding_lengths(tokenizer))


class ChunkCache:
    """Encoded chunks, so the empty negative prompt, the padding of long prompts and rerolled prompts skip the
    text encoder. One per model; not to be used while LoRAs change the encoder's weights."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._entries: OrderedDict[tuple[Any, ...], tuple[torch.Tensor, torch.Tensor | None]] = OrderedDict()

    def clear(self) -> None:
        self._entries.clear()

    @staticmethod
    def key(encoder: Encoder, chunk: Chunk) -> tuple[Any, ...]:
        return (id(encoder.model), encoder.layer, encoder.normalize, chunk.tokens, chunk.multipliers)

    def encode(self, encoder: Encoder, chunks: Sequence[Chunk]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """As `_encode`, running only the chunks not seen lately through the encoder (once each)."""
        keys = [self.key(encoder, chunk) for chunk in chunks]
        missing = list(dict.fromkeys(key for key in keys if key not in self._entries))
        if missing:
            fresh = {key: chunk for key, chunk in zip(keys, chunks, strict=True) if key in missing}
            hidden, pooled = _encode(encoder, [fresh[key] for key in missing])
            for i, key in enumerate(missing):
                # Copies: a view would keep the whole batch's tensor alive.
                self._entries[key] = (hidden[i : i + 1].clone(), None if pooled is None else pooled[i : i + 1].clone())
        for key in keys:
            self._entries.move_to_end(key)
        rows = [self._entries[key] for key in keys]
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        hidden = torch.cat([row_hidden for row_hidden, _ in rows])
        pooled_rows = [row_pooled for _, row_pooled in rows]
        return hidden, None if pooled_rows[0] is None else torch.cat([p for p in pooled_rows if p is not None])


def _encode(encoder: Encoder, chunks: Sequence[Chunk]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One chunk per row through the encoder, weighted and with each row's mean restored as A1111 does."""
    device = encoder.model.device
    tokens = torch.tensor([c.tokens for c in chunks], device=device)
    outputs = encoder.model(tokens, output_hidden_states=encoder.layer > 1 or not encoder.normalize)
    if encoder.layer == 1 and encoder.normalize:
        hidden = outputs.last_hidden_state
    else:
        states = outputs.hidden_states
        hidden = states[-min(encoder.layer, len(states))]
        if encoder.normalize:
            # transformers 5 puts the layer norm on the model itself, 4.x on its `text_model`.
            hidden = getattr(encoder.model, "text_model", encoder.model).final_layer_norm(hidden)
    multipliers = torch.tensor([c.multipliers for c in chunks], device=device, dtype=hidden.dtype)
    pooled = outputs.text_embeds if encoder.pooled else None
    return restore_mean(hidden, multipliers), pooled


def restore_mean(hidden: torch.Tensor, multipliers: torch.Tensor) -> torch.Tensor:
    """Weigh each token's embedding, then scale each row back to its unweighted mean, as A1111 does.

    A1111 restores the mean over its whole batch; per row gives the same for one prompt and keeps each job
    of a batch independent of the others. Unweighted rows are left exactly as encoded, and a row whose
    weighted mean is zero is left unscaled: the ratio would be 0/0 there, and every pixel NaN.
    """
    weighted = hidden * multipliers.unsqueeze(-1)
    original_mean = hidden.mean(dim=(1, 2), keepdim=True)
    new_mean = weighted.mean(dim=(1, 2), keepdim=True)
    scale = torch.where(new_mean == 0, torch.ones_like(new_mean), original_mean / new_mean)
    unweighted = (multipliers == 1).all(dim=1).view(-1, 1, 1)
    return torch.where(unweighted, hidden, weighted * scale)


@dataclass(frozen=True)
class Conditioning:
    """What the pipeline takes instead of prompt strings; `pooled` ones only for SDXL."""

    prompt_embeds: torch.Tensor
    negative_prompt_embeds: torch.Tensor
    pooled_prompt_embeds: torch.Tensor | None = None
    negative_pooled_prompt_embeds: torch.Tensor | None = None

    def arguments(self) -> dict[str, torch.Tensor]:
        """Keyword arguments for a diffusers call."""
        return {name: value for name, value in vars(self).items() if value is not None}


def chunk_count(pipe: Any, text: str) -> int:
    """How many 75-token chunks `text` takes in the pipe's encoder that needs the most."""
    return max(len(_prompt_chunks(pipe, encoder, text)) for encoder in encoders(pipe, 0))


def encode_prompts(
    pipe: Any,
    prompts: Sequence[str],
    negatives: Sequence[str],
    clip_skip: int = 0,
    cache: ChunkCache | None = None,
    min_chunks: int = 1,
) -> Conditioning:
    """Encode one prompt and one negative per row; every row padded to the same number of chunks (`min_chunks` at
    least, so the texts of every step of a prompt-editing schedule have one length).

    `clip_skip` 0 means the model's default (the last layer); SDXL pipes ignore it, as A1111 does. With a
    `cache`, chunks encoded lately are taken from it.
    """
    if len(prompts) != len(negatives):
        raise ValueError(f"{len(prompts)} prompts but {len(negatives)} negative prompts")
    texts = [*prompts, *negatives]
    chosen = encoders(pipe, clip_skip)
    per_encoder = [[_prompt_chunks(pipe, encoder, text) for text in texts] for encoder in chosen]
    count = max(min_chunks, *(len(chunks) for rows in per_encoder for chunks in rows))
    hidden_parts: list[torch.Tensor] = []
    pooled: torch.Tensor | None = None
    for encoder, rows in zip(chosen, per_encoder, strict=True):
        special = SpecialTokens.of(encoder.tokenizer)
        empty = special.chunk([], [])
        padded = [chunks + [empty] * (count - len(chunks)) for chunks in rows]
        encode = cache.encode if cache is not None else _encode
        encoded = [encode(encoder, [chunks[i] for chunks in padded]) for i in range(count)]
        hidden_parts.append(torch.cat([hidden for hidden, _ in encoded], dim=1))
        if encoder.pooled:
            # A1111 takes the pooled embedding of the first chunk.
            pooled = encoded[0][1]
    hidden = torch.cat(hidden_parts, dim=-1)
    half = len(prompts)
    return Conditioning(
        prompt_embeds=hidden[:half],
        negative_prompt_embeds=hidden[half:],
        pooled_prompt_embeds=None if pooled is None else pooled[:half],
        negative_pooled_prompt_embeds=None if pooled is None else pooled[half:],
    )
