"""A prompt's length in 75-token chunks: counted at intake without torch exactly as the engine counts it, bounded
on both sides, and an over-long job fails alone in the engine."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from diffusers import StableDiffusionPipeline
from transformers import CLIPTokenizer

from bot.pipeline.installed import Installed
from core.catalog import Catalog
from core.chunking import SD_TOKENIZER, ChunkCounter, check_chunk_count
from core.network_files import NetworkFolder
from core.params import MAX_PROMPT_CHUNKS, GenerationParams, InvalidParams
from core.source import parse_source
from core.wire import GenerateRequest, JobFailed, JobResult, Message
from engine.conditioning import chunk_count
from engine.embeddings import load_embeddings
from engine.generate import Painter
from engine.loading import LoadedModel, load_model
from engine.model_shelf import ModelShelf, catalog_loader
from engine.worker import Worker
from tests.support.tiny_networks import write_a1111_embedding

FOX = GenerationParams(prompt="a red fox", negative_prompt="blurry", width=64, height=64, steps=1, seed=1234)
TOO_LONG = "The prompt takes 9 chunks of 75 tokens (each BREAK starts a new one): shorten it to 8 chunks (600 tokens)"

# Texts where the count is easy to get wrong: BREAKs, weights, a comma near a chunk's edge, many short clauses.
TEXTS = [
    "a red fox",
    "",
    "a cat BREAK a dog BREAK BREAK (a bird:1.3)",
    " ".join(["word"] * 70) + ", " + " ".join(["tail"] * 10),
    "masterpiece, best quality, (detailed face:1.2), " * 20,
    "[castle], ((hill)), sunset BREAK " * 5 + "x " * 80,
    "x BREAK " * 250 + "x",
]


class Sent:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    def send(self, message: Message) -> None:
        self.messages.append(message)


class NeverCancelled:
    def is_cancelled(self, _job_id: str) -> bool:
        return False


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> LoadedModel:
    return load_model(parse_source(str(tiny_model_dir)), torch.device("cpu"))


def test_the_bot_counts_chunks_as_the_engine_does_with_the_shipped_tokenizer(tiny: LoadedModel) -> None:
    pipe = StableDiffusionPipeline(**{**tiny.pipe.components, "tokenizer": CLIPTokenizer.from_pretrained(SD_TOKENIZER)})
    counter = ChunkCounter()
    counts = [counter.count(text) for text in TEXTS]
    assert counts == [chunk_count(pipe, text) for text in TEXTS]
    assert counts[:3] == [1, 1, 4] and counts[-1] == 251, "250 BREAKs make 251 chunks"


def test_more_than_eight_chunks_is_a_sentence() -> None:
    check_chunk_count("prompt", MAX_PROMPT_CHUNKS)
    with pytest.raises(InvalidParams) as refused:
        check_chunk_count("prompt", 9)
    assert str(refused.value) == f"{TOO_LONG} or fewer."


@pytest.mark.parametrize(
    ("changes", "sentence"),
    [
        ({"prompt": "a cat BREAK " * 8 + "a cat"}, f"{TOO_LONG} or fewer."),
        ({"negative_prompt": "blurry BREAK " * 100 + "blurry"}, "The negative prompt takes 101 chunks of 75 tokens"),
    ],
)
def test_intake_refuses_a_prompt_over_eight_chunks(changes: dict[str, str], sentence: str) -> None:
    installed = Installed()
    installed.check(dataclasses.replace(FOX, prompt="a cat BREAK " * 7 + "a cat"))
    with pytest.raises(InvalidParams) as refused:
        installed.check(dataclasses.replace(FOX, **changes))  # type: ignore[arg-type]
    assert str(refused.value).startswith(sentence)


def test_counting_at_intake_leaves_torch_out() -> None:
    code = (
        "import sys\nfrom bot.pipeline.installed import Installed\nfrom core.params import GenerationParams\n"
        "Installed().check(GenerationParams(prompt='a (red:1.2) fox, ' * 40 + 'BREAK owl', negative_prompt='blurry'))\n"
        "print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_a_job_over_eight_chunks_in_the_engine_fails_alone(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Embeddings add vectors only the engine sees: nine 75-vector ones pass the bot's count, not the engine's."""
    model = load_model(parse_source(str(tiny_model_dir)), torch.device("cpu"))  # embeddings change its tokenizer
    write_a1111_embedding(tmp_path / "embeddings" / "wide.safetensors", width=32, vectors=75)
    embeddings = load_embeddings(model.pipe, NetworkFolder(tmp_path / "embeddings"))
    shelf = ModelShelf(
        model,
        parse_source(str(tiny_model_dir)),
        Catalog(),
        loader=catalog_loader(torch.device("cpu"), False),
        make_painter=lambda loaded, inpaint: Painter(loaded, inpaint, embeddings=embeddings),
    )
    wide = dataclasses.replace(FOX, prompt="wide " * 9)
    Installed().check(wide)
    long_negative = dataclasses.replace(FOX, negative_prompt="x BREAK " * 8 + "x")
    sent = Sent()
    worker = Worker(shelf, sent, NeverCancelled())  # type: ignore[arg-type]
    requests = [("fox", FOX), ("wide", wide), ("negative", long_negative), ("cat", dataclasses.replace(FOX, seed=7))]
    worker.run_batch([GenerateRequest(job_id, params) for job_id, params in requests])
    worker.flush()
    ends = {m.job_id: m for m in sent.messages if isinstance(m, JobResult | JobFailed)}
    assert ends["wide"] == JobFailed(job_id="wide", message=f"{TOO_LONG} or fewer.")
    assert ends["negative"] == JobFailed(job_id="negative", message=f"The negative {TOO_LONG[4:]} or fewer.")
    assert isinstance(ends["fox"], JobResult) and isinstance(ends["cat"], JobResult)
