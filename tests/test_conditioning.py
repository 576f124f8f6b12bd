"""Text conditioning as A1111 builds it, on the tiny SD model and a tiny SDXL pipeline built in the test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers import StableDiffusionPipeline
from transformers import CLIPTokenizer

from core.chunking import CHUNK_LENGTH, SpecialTokens, chunk_fragments, embedding_lengths
from core.network_files import NetworkFolder
from core.prompt_syntax import parse_prompt_attention
from core.source import parse_source
from engine.conditioning import ChunkCache, encode_prompts, restore_mean
from engine.embeddings import load_embeddings
from engine.loading import LoadedModel, load_model
from tests.support.tiny_networks import give_trained_text_mean, write_a1111_embedding, write_sdxl_embedding
from tests.support.tiny_sdxl import HIDDEN_1, HIDDEN_2, PROJECTION, build_tiny_sdxl_pipeline

# 100 single-byte words: 100 tokens with the tiny byte-level tokenizer, more than one 75-token chunk holds.
LONG = " ".join("abcdefghij"[i % 10] for i in range(100))


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> LoadedModel:
    model = load_model(parse_source(str(tiny_model_dir)), torch.device("cpu"))
    give_trained_text_mean(model.pipe.text_encoder)
    return model


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory: pytest.TempPathFactory) -> object:
    return build_tiny_sdxl_pipeline(tmp_path_factory.mktemp("sdxl"))


def encode(pipe: object, prompt: str, negative: str = "", clip_skip: int = 0) -> torch.Tensor:
    with torch.inference_mode():
        return encode_prompts(pipe, [prompt], [negative], clip_skip).prompt_embeds


def test_a_plain_prompt_encodes_as_diffusers_does(tiny: LoadedModel) -> None:
    with torch.inference_mode():
        ours = encode_prompts(tiny.pipe, ["a red fox"], ["blurry"])
        theirs = tiny.pipe.encode_prompt("a red fox", "cpu", 1, True, "blurry")
    assert ours.prompt_embeds.shape == (1, 77, 32)
    assert torch.equal(ours.prompt_embeds, theirs[0]) and torch.equal(ours.negative_prompt_embeds, theirs[1])


def test_a_long_prompt_is_chunked_not_truncated(tiny: LoadedModel) -> None:
    long = encode(tiny.pipe, LONG)
    assert long.shape == (1, 2 * 77, 32)
    # A word past the 77th token still changes the conditioning: nothing was cut off.
    changed = encode(tiny.pipe, LONG[:-1] + "z")
    assert not torch.equal(long[:, 77:], changed[:, 77:])
    assert torch.equal(long[:, :77], changed[:, :77])


def test_break_starts_a_new_chunk(tiny: LoadedModel) -> None:
    both = encode(tiny.pipe, "a cat BREAK a dog")
    assert both.shape == (1, 154, 32)
    assert torch.equal(both[:, :77], encode(tiny.pipe, "a cat"))
    assert torch.equal(both[:, 77:], encode(tiny.pipe, "a dog"))


def test_positive_and_negative_are_padded_to_the_same_chunks(tiny: LoadedModel) -> None:
    with torch.inference_mode():
        conditioning = encode_prompts(tiny.pipe, [LONG, "a fox"], ["", "blurry"])
    assert conditioning.prompt_embeds.shape == conditioning.negative_prompt_embeds.shape == (2, 154, 32)
    # The padding chunk is A1111's empty chunk, the same as what "" encodes to.
    assert torch.equal(conditioning.negative_prompt_embeds[0, 77:], encode(tiny.pipe, "")[0])
    # Each row is encoded as it would be alone: one job of a batch does not change another.
    assert torch.equal(conditioning.prompt_embeds[1, :77], encode(tiny.pipe, "a fox")[0])


def test_a_weight_changes_the_embeddings_and_keeps_their_mean(tiny: LoadedModel) -> None:
    plain = encode(tiny.pipe, "a red fox")
    weighted = encode(tiny.pipe, "a (red:1.5) fox")
    assert torch.equal(encode(tiny.pipe, "a (red:1) fox"), plain)
    assert not torch.equal(weighted, plain)
    assert torch.allclose(weighted.mean(), plain.mean(), atol=1e-6)
    assert not torch.equal(encode(tiny.pipe, "a [red] fox"), plain)


def test_a_row_whose_mean_is_zero_is_not_divided_by_zero() -> None:
    # Every token's features sum to zero, as a layer norm without bias makes them.
    hidden = torch.tensor([1.0, -1.0]).repeat(2, 77, 2)
    multipliers = torch.ones(2, 77)
    multipliers[1, 3] = 1.5
    restored = restore_mean(hidden, multipliers)
    assert torch.isfinite(restored).all()
    assert torch.equal(restored[0], hidden[0])
    assert torch.equal(restored[1], hidden[1] * multipliers[1].unsqueeze(-1))


def test_an_unweighted_row_is_left_exactly_as_encoded() -> None:
    hidden = torch.randn(2, 77, 8, generator=torch.Generator().manual_seed(3)) + 0.1
    multipliers = torch.ones(2, 77)
    multipliers[1, 5] = 0.5
    restored = restore_mean(hidden, multipliers)
    assert torch.equal(restored[0], hidden[0])
    assert torch.allclose(restored[1].mean(), hidden[1].mean(), atol=1e-6)


def test_an_untrained_text_encoder_gives_no_nan(tiny_model_dir: Path) -> None:
    # The fresh tiny model's embeddings average to exactly zero for this prompt: it once made every pixel NaN.
    model = load_model(parse_source(str(tiny_model_dir)), torch.device("cpu"))
    with torch.inference_mode():
        conditioning = encode_prompts(model.pipe, ["a dragon made of autumn leaves"], ["blurry"])
        theirs = model.pipe.encode_prompt("a dragon made of autumn leaves", "cpu", 1, True, "blurry")
    assert torch.equal(conditioning.prompt_embeds, theirs[0])


def test_clip_skip_takes_an_earlier_layer(tiny: LoadedModel) -> None:
    last = encode(tiny.pipe, "a red fox", clip_skip=1)
    assert torch.equal(encode(tiny.pipe, "a red fox", clip_skip=0), last)
    skipped = encode(tiny.pipe, "a red fox", clip_skip=2)
    assert not torch.equal(skipped, last)
    with torch.inference_mode():
        ids = tiny.pipe.tokenizer("a red fox", padding="max_length", max_length=77, return_tensors="pt").input_ids
        states = tiny.pipe.text_encoder(ids, output_hidden_states=True).hidden_states
        expected = tiny.pipe.text_encoder.final_layer_norm(states[-2])
    assert torch.allclose(skipped, expected, atol=1e-6)


def test_a_chunk_that_fills_near_a_comma_breaks_after_it(tiny: LoadedModel) -> None:
    tokenizer = tiny.pipe.tokenizer
    special = SpecialTokens.of(tokenizer)
    prompt = " ".join(["a"] * 70) + ", " + " ".join(["b"] * 10)
    fragments = parse_prompt_attention(prompt)
    ids = tokenizer([f.text for f in fragments], add_special_tokens=False)["input_ids"]
    first, second = chunk_fragments(fragments, ids, special)
    comma = tokenizer.get_vocab()[",</w>"]
    # The 70 a's and the comma stay together; the clause after it moves whole to the next chunk.
    assert first.tokens[1:72] == (*ids[0][:70], comma) and first.tokens[72] == special.eos
    assert second.tokens[1:11] == tuple(ids[0][71:81])
    assert len(first.tokens) == len(second.tokens) == CHUNK_LENGTH + 2


def test_sdxl_conditioning_has_both_encoders_and_pooled_embeds(sdxl: object) -> None:
    with torch.inference_mode():
        short = encode_prompts(sdxl, ["a red fox"], [""], clip_skip=2)
        long = encode_prompts(sdxl, [LONG], ["blurry"])
        default = encode_prompts(sdxl, ["a red fox"], [""])
    assert short.prompt_embeds.shape == (1, 77, HIDDEN_1 + HIDDEN_2)
    assert short.pooled_prompt_embeds is not None and short.pooled_prompt_embeds.shape == (1, PROJECTION)
    assert long.prompt_embeds.shape == long.negative_prompt_embeds.shape == (1, 154, HIDDEN_1 + HIDDEN_2)
    assert long.negative_pooled_prompt_embeds is not None and long.negative_pooled_prompt_embeds.shape == (
        1,
        PROJECTION,
    )
    # A1111 always uses SDXL's penultimate layer: clip skip changes nothing there.
    assert torch.equal(short.prompt_embeds, default.prompt_embeds)
    assert set(short.arguments()) == {
        "prompt_embeds",
        "negative_prompt_embeds",
        "pooled_prompt_embeds",
        "negative_pooled_prompt_embeds",
    }


def test_sdxl_second_tokenizer_pads_with_its_own_pad_token(sdxl: object) -> None:
    special = SpecialTokens.of(sdxl.tokenizer_2)  # type: ignore[attr-defined]
    assert special.pad == 0 != special.eos
    chunk = special.chunk([5, 6], [1.0, 1.0])
    assert chunk.tokens[:4] == (special.bos, 5, 6, special.eos) and set(chunk.tokens[4:]) == {0}


def test_sdxl_pipeline_draws_from_our_conditioning(sdxl: object) -> None:
    with torch.inference_mode():
        conditioning = encode_prompts(sdxl, ["a (red:1.2) fox"], ["blurry"])
        image = sdxl(  # type: ignore[operator]
            **conditioning.arguments(), num_inference_steps=1, width=64, height=64, output_type="np"
        ).images
    assert image.shape == (1, 64, 64, 3)


def test_an_sdxl_embedding_pair_loads_into_both_encoders(tmp_path: Path) -> None:
    pipe = build_tiny_sdxl_pipeline(tmp_path / "sdxl")
    folder = tmp_path / "embeddings"
    write_sdxl_embedding(folder / "fancystyle.safetensors", HIDDEN_1, HIDDEN_2)
    # Made for SD 1.x (one tensor): skipped, so the name stays plain text.
    write_sdxl_embedding(folder / "wrongwidth.safetensors", HIDDEN_1 + 1, HIDDEN_2)
    plain = encode(pipe, "a fancystyle fox")
    embeddings = load_embeddings(pipe, NetworkFolder(folder))
    assert list(embeddings.hashes) == ["fancystyle"]
    assert "fancystyle" in pipe.tokenizer.get_vocab() and "fancystyle" in pipe.tokenizer_2.get_vocab()
    assert not torch.equal(encode(pipe, "a fancystyle fox"), plain)


def test_an_embedding_is_never_split_across_chunks(tmp_path: Path, tiny_model_dir: Path) -> None:
    model = load_model(parse_source(str(tiny_model_dir)), torch.device("cpu"))
    write_a1111_embedding(tmp_path / "emb" / "threevec.safetensors", width=32, vectors=3)
    load_embeddings(model.pipe, NetworkFolder(tmp_path / "emb"))
    tokenizer = model.pipe.tokenizer
    lengths = embedding_lengths(tokenizer)
    first = tokenizer.convert_tokens_to_ids("threevec")
    assert lengths == {first: 3}
    # 73 words, then the three vectors: they would straddle the 75-token edge, so all three move on.
    fragments = parse_prompt_attention(" ".join(["a"] * 73) + " threevec")
    text = model.pipe.maybe_convert_prompt(fragments[0].text, tokenizer)
    ids = tokenizer([text], add_special_tokens=False)["input_ids"]
    one, two = chunk_fragments(fragments, ids, SpecialTokens.of(tokenizer), lengths)
    special = SpecialTokens.of(tokenizer)
    assert one.tokens[74] == special.eos and first not in one.tokens
    assert two.tokens[1:4] == (first, first + 1, first + 2)


def test_sd2_openclip_ignores_clip_skip_as_a1111(tiny: LoadedModel, tiny_model_dir: Path) -> None:
    # SD 2.x's tokenizer pads with `!` (id 0) after the end token; that is how an OpenCLIP encoder is told apart.
    tokenizer = CLIPTokenizer.from_pretrained(tiny_model_dir / "tokenizer", pad_token="!")
    sd2 = StableDiffusionPipeline(**{**tiny.pipe.components, "tokenizer": tokenizer})
    assert torch.equal(encode(sd2, "a red fox", clip_skip=2), encode(sd2, "a red fox", clip_skip=1))
    assert not torch.equal(encode(sd2, "a red fox"), encode(tiny.pipe, "a red fox"))


class CountingEncoder:
    """The text encoder, counting the chunks that go through it."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model, self.chunks = model, 0

    def __call__(self, tokens: torch.Tensor, **options: object) -> object:
        self.chunks += tokens.shape[0]
        return self.model(tokens, **options)

    def __getattr__(self, name: str) -> object:
        return getattr(self.model, name)


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_a_chunk_cache_spares_the_encoder_and_changes_nothing(
    family: str, tiny: LoadedModel, sdxl: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipe: Any = tiny.pipe if family == "sd15" else sdxl
    prompts, negatives = ["a red fox", "an owl, " * 40, "a red fox"], ["", "", "blurry"]
    plain = encode_prompts(pipe, prompts, negatives)
    counting = CountingEncoder(pipe.text_encoder)
    monkeypatch.setattr(pipe, "text_encoder", counting)
    cache = ChunkCache()
    first = encode_prompts(pipe, prompts, negatives, cache=cache)
    seen = counting.chunks
    again = encode_prompts(pipe, ["a red fox"], [""], cache=cache)
    assert counting.chunks == seen, "a rerolled prompt and the empty negative come from the cache"
    encode_prompts(pipe, ["a grey wolf"], [""], cache=cache)
    assert counting.chunks == seen + 1, "only the new prompt's chunk goes through the encoder"
    for name, value in plain.arguments().items():
        assert torch.allclose(first.arguments()[name], value, atol=1e-5), name
    assert torch.allclose(again.prompt_embeds[0], plain.prompt_embeds[0, :77], atol=1e-5)
