"""Batches in the engine on the tiny model: the same images as alone, per-job cancel, throttled previews."""

from __future__ import annotations

import io
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import AutoencoderTiny
from PIL import Image

from core.batching import batch_key, compatible, fits
from core.catalog import Catalog
from core.network_files import NetworkFolder
from core.params import GenerationParams
from core.source import parse_source
from core.wire import GenerateRequest, JobFailed, JobResult, Message, Progress
from engine.acceleration import WARM_UP_SAMPLERS, compile_model, warm_up, warm_up_jobs
from engine.batch_progress import BatchProgress
from engine.generate import BatchJob, Drawn, Painter
from engine.loading import LoadedModel, load_model
from engine.loras import LoraLoader
from engine.model_shelf import ModelShelf, catalog_loader
from engine.preview import PREVIEW_SIDE, Previewer, PreviewError, load_tiny_autoencoder
from engine.worker import CANCELLED, Worker, batch_groups
from tests.support.tiny_networks import give_trained_text_mean, write_kohya_lora

FOX = GenerationParams(prompt="a red fox", negative_prompt="blurry", width=64, height=64, steps=2, seed=1234)
OWL = GenerationParams(prompt="an owl at night", width=64, height=64, steps=2, seed=99, cfg=4.0, count=2)
CAT = GenerationParams(prompt="a cat", negative_prompt="dog", width=64, height=64, steps=2, seed=7, cfg=11.0)
# Batched matrix kernels add up in another order than single ones: a level or two of 255 at most.
TOLERANCE = 3


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> LoadedModel:
    return load_model(parse_source(str(tiny_model_dir)), torch.device("cpu"))


@pytest.fixture
def shelf(tiny: LoadedModel, tiny_model_dir: Path) -> ModelShelf:
    """The engine's models with only the default one: the tiny model."""
    cpu = torch.device("cpu")
    return ModelShelf(tiny, parse_source(str(tiny_model_dir)), Catalog(), loader=catalog_loader(cpu, False))


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def test_a_batch_of_several_cfgs_leaves_half_precision_weights_in_half_precision(tiny_model_dir: Path) -> None:
    # As on a GPU, where the engine loads in fp16: diffusers' from_pipe casts the weights it shares to float32
    # unless told their dtype, which made every later image draw at fp32's speed and memory.
    half = load_model(parse_source(str(tiny_model_dir)), torch.device("cpu"))
    half.pipe.to(dtype=torch.float16)
    half = replace(half, dtype=torch.float16)
    painter = Painter(half)

    painter.draw([BatchJob(FOX), BatchJob(CAT)])
    painter.draw([BatchJob(replace(FOX, hires=1.5)), BatchJob(replace(CAT, hires=1.5))])  # the img2img pass's twin

    for component in (half.pipe.unet, half.pipe.vae, half.pipe.text_encoder):
        assert {p.dtype for p in component.parameters()} == {torch.float16}


def test_the_same_seed_draws_the_same_image_alone_or_in_a_batch_with_other_prompts_and_cfg(tiny: LoadedModel) -> None:
    painter = Painter(tiny)
    batched = [painter.finish(drawn) for drawn in painter.draw([BatchJob(FOX), BatchJob(OWL), BatchJob(CAT)])]
    for params, images in zip((FOX, OWL, CAT), batched, strict=True):
        alone = painter.paint(params)
        assert [i.seed for i in images] == list(params.seeds())
        assert [i.infotext for i in images] == [i.infotext for i in alone]
        for mine, single in zip(images, alone, strict=True):
            assert np.abs(pixels(mine.png) - pixels(single.png)).max() <= TOLERANCE
    # The tolerance tells cfgs apart, so the batch really guided each image by its own: FOX at CAT's cfg differs.
    louder = painter.paint(replace(FOX, cfg=CAT.cfg))[0]
    assert np.abs(pixels(louder.png) - pixels(batched[0][0].png)).max() > 2 * TOLERANCE


def test_what_may_share_a_loop() -> None:
    assert compatible(FOX, OWL) and compatible(FOX, CAT)
    assert not compatible(FOX, replace(FOX, width=128))
    assert not compatible(FOX, replace(FOX, steps=3)) and not compatible(FOX, replace(FOX, sampler="Euler a"))
    # Jobs over source images share a loop where their mode, size, strength and upscaler agree.
    varied = FOX.variation((64, 64), "subtle", seed=1)
    assert compatible(varied, OWL.variation((64, 64), "subtle", seed=2))
    assert not compatible(varied, FOX.variation((64, 64), "strong", seed=1))
    assert not compatible(varied, FOX.variation((128, 64), "subtle", seed=1))
    assert not compatible(varied, FOX) and not compatible(FOX, varied)
    upscaled = FOX.upscaled((64, 64), seed=1)
    assert compatible(upscaled, CAT.upscaled((64, 64), seed=5))
    assert not compatible(upscaled, FOX.upscaled((64, 64), seed=1, upscaler="4x-UltraSharp.pth"))
    assert not compatible(upscaled, FOX.upscaled((32, 64), seed=1))
    assert not compatible(upscaled, replace(varied, width=128, height=128))
    for alone in (FOX.zoomed_out((64, 64), 2.0, seed=1), FOX.panned((64, 64), "left", seed=1)):
        assert batch_key(alone) is None and not compatible(alone, alone)
    assert batch_key(FOX.faces_fixed((64, 64), seed=1)) is None
    assert fits([FOX, OWL, CAT], max_images=4, max_pixels=10**6)
    assert not fits([FOX, OWL, CAT], max_images=3, max_pixels=10**6)
    assert not fits([FOX, OWL], max_images=8, max_pixels=2 * 64 * 64)
    assert fits([replace(FOX, count=4)], max_images=1, max_pixels=1), "a lone job is the engine's own business"
    requests = [GenerateRequest(str(i), p) for i, p in enumerate([FOX, OWL, replace(CAT, width=128), FOX])]
    assert [[r.job_id for r in group] for group in batch_groups(requests)] == [["0", "1"], ["2"], ["3"]]


class Cancels:
    def __init__(self) -> None:
        self.ids: set[str] = set()

    def is_cancelled(self, job_id: str) -> bool:
        return job_id in self.ids


class Sent:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    def send(self, message: Message) -> None:
        self.messages.append(message)


class Ticks:
    """A clock that moves `step` seconds each time it is read."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_a_job_cancelled_mid_batch_is_dropped_and_the_others_delivered(shelf: ModelShelf) -> None:
    cancels, sent = Cancels(), Sent()

    class CancelAtFirstStep(Sent):
        def send(self, message: Message) -> None:
            super().send(message)
            if isinstance(message, Progress):
                cancels.ids.add("owl")

    sent = CancelAtFirstStep()
    worker = Worker(shelf, sent, cancels)  # type: ignore[arg-type]
    worker.run_batch([GenerateRequest("fox", FOX), GenerateRequest("owl", OWL)])
    worker.flush()
    ends = {m.job_id: m for m in sent.messages if isinstance(m, JobResult | JobFailed)}
    assert isinstance(ends["fox"], JobResult) and len(ends["fox"].images) == 1
    assert ends["owl"] == JobFailed(job_id="owl", message=CANCELLED)
    steps = [(m.job_id, m.step) for m in sent.messages if isinstance(m, Progress)]
    assert steps == [("fox", 1), ("owl", 1), ("fox", 2)], "no progress for a cancelled job"


def test_cancelling_every_job_stops_the_loop_between_steps(shelf: ModelShelf) -> None:
    cancels, sent = Cancels(), Sent()
    cancels.ids.add("fox")
    worker = Worker(shelf, sent, cancels)  # type: ignore[arg-type]
    worker.run_batch([GenerateRequest("fox", FOX), GenerateRequest("bad", replace(FOX, width=65))])
    worker.flush()
    assert [type(m).__name__ for m in sent.messages] == ["JobFailed", "JobFailed"]
    assert sent.messages[0] == JobFailed(job_id="fox", message=CANCELLED)
    assert "multiple of 8" in sent.messages[1].message  # type: ignore[union-attr]


def test_previews_are_throttled_by_the_clock_and_go_to_wanted_jobs_only() -> None:
    sent, cancels = Sent(), Cancels()
    jobs = [GenerateRequest("fox", FOX), GenerateRequest("owl", OWL)]
    progress = BatchProgress(jobs, sent.send, cancels, Previewer(0.18215), Ticks(0.6), interval=1.0)
    latents = torch.randn(3, 4, 8, 8)
    owners = [0, 1, 1]
    for step in range(1, 6):
        progress.on_latents(owners, latents)
        progress.on_step(step, 5)
        if step == 3:
            cancels.ids.add("owl")
    with_preview = [(m.job_id, m.step) for m in sent.messages if isinstance(m, Progress) and m.preview]
    # The clock moves 0.6 s per read: a preview every second read, at steps 2 and 4 (owl cancelled by then).
    assert with_preview == [("fox", 2), ("owl", 2), ("fox", 4)]
    image = Image.open(io.BytesIO(next(m.preview for m in sent.messages if isinstance(m, Progress) and m.preview)))
    assert image.format == "WEBP" and image.size == (32, 32)


def test_a_tiny_autoencoder_decodes_previews(tmp_path: Path) -> None:
    torch.manual_seed(0)
    AutoencoderTiny(
        encoder_block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
    ).save_pretrained(tmp_path / "taesd")
    tiny = load_tiny_autoencoder(tmp_path / "taesd", torch.device("cpu"), torch.float32)
    preview = Image.open(io.BytesIO(Previewer(0.18215, tiny).preview(torch.randn(4, 32, 32))))
    assert preview.format == "WEBP" and preview.size == (PREVIEW_SIDE, PREVIEW_SIDE)
    with pytest.raises(PreviewError, match="^SDBOT_PREVIEW_MODEL: could not load"):
        load_tiny_autoencoder(tmp_path / "missing", torch.device("cpu"), torch.float32)


def test_jobs_batch_only_with_the_same_model_clip_skip_and_loras() -> None:
    assert not compatible(FOX, replace(FOX, model="anything-v3"))
    assert not compatible(FOX, replace(FOX, clip_skip=2))
    assert not compatible(replace(FOX, prompt="fox <lora:ink:0.8>"), FOX)
    assert compatible(replace(FOX, prompt="fox <lora:ink:0.8>"), replace(OWL, prompt="owl <lora:ink:0.8>"))


def test_jobs_with_other_text_encoder_or_unet_weights_do_not_share_a_loop() -> None:
    split = replace(FOX, prompt="fox <lora:ink:0.8:0.5>")
    assert not compatible(split, replace(OWL, prompt="owl <lora:ink:0.8>"))
    assert not compatible(split, replace(OWL, prompt="owl <lora:ink:0.5>"))
    assert compatible(split, replace(OWL, prompt="owl <lyco:ink:te=0.8:unet=0.5>"))
    assert compatible(replace(FOX, prompt="fox <lora:ink:0.8:0.8>"), replace(OWL, prompt="owl <lora:ink:0.8>"))


class Verdicts:
    """A checker that flags every image (or fails), noting how many it saw per call and on which thread."""

    def __init__(self, fails: bool = False) -> None:
        self.fails = fails
        self.calls: list[tuple[int, str]] = []

    def flags(self, images: list[Image.Image]) -> list[bool]:
        self.calls.append((len(images), threading.current_thread().name))
        if self.fails:
            raise RuntimeError("the checker broke")
        return [True] * len(images)


def test_the_safety_checker_sees_only_the_jobs_that_ask_in_one_pass_beside_the_gpu(shelf: ModelShelf) -> None:
    checker, sent = Verdicts(), Sent()
    worker = Worker(shelf, sent, Cancels(), None, checker)  # type: ignore[arg-type]
    worker.run_batch([GenerateRequest("fox", FOX), GenerateRequest("owl", OWL, check_safety=True)])
    worker.flush()
    results = {m.job_id: m for m in sent.messages if isinstance(m, JobResult)}
    ((count, thread),) = checker.calls
    assert count == 2, "the owl's two images, checked together"
    assert thread.startswith("engine-results"), "on the writer thread, not between two denoising loops"
    assert [i.flagged for i in results["owl"].images] == [True, True]
    assert [i.flagged for i in results["fox"].images] == [False]


def test_a_broken_safety_checker_fails_only_the_jobs_that_asked_for_it(shelf: ModelShelf) -> None:
    sent = Sent()
    worker = Worker(shelf, sent, Cancels(), None, Verdicts(fails=True))  # type: ignore[arg-type]
    worker.run_batch([GenerateRequest("fox", FOX), GenerateRequest("owl", OWL, check_safety=True)])
    worker.flush()
    assert [m.job_id for m in sent.messages if isinstance(m, JobFailed)] == ["owl"], "no image goes out unchecked"
    assert [m.job_id for m in sent.messages if isinstance(m, JobResult)] == ["fox"], "nor is one lost"


def test_after_its_warm_up_a_compiled_model_never_recompiles_draws_the_same_images_and_takes_loras_off_again(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    model = load_model(parse_source(str(tiny_model_dir)), torch.device("cpu"))  # compiling changes it in place
    give_trained_text_mean(model.pipe.text_encoder)  # the LoRA's weights on an untrained norm give NaNs
    plain = Painter(model).draw([BatchJob(FOX), BatchJob(CAT)])
    write_kohya_lora(tmp_path / "detail.safetensors", model.pipe, seed=1)
    graphs: list[torch.fx.GraphModule] = []

    def counting(graph: torch.fx.GraphModule, _inputs: object) -> object:
        """dynamo's eager backend, counting what it is given: the graphs inductor would compile."""
        graphs.append(graph)
        return graph.forward

    torch._dynamo.utils.counters.clear()
    compile_model(model, backend=counting)
    loras = LoraLoader(NetworkFolder(tmp_path))
    painter = Painter(model, loras=loras)
    told: list[tuple[int, int]] = []
    assert warm_up(painter, lambda number, of: told.append((number, of))) > 0 and graphs, "the warm-up compiled"
    assert told == [(number, len(told)) for number in range(1, len(told) + 1)], "each warm-up batch is announced"
    assert model.pipe.unet._compiled_call_impl is not None, "compiled in place, still a diffusers model"
    warmed = len(graphs)
    compiled = painter.draw([BatchJob(FOX), BatchJob(CAT)])
    painter.draw([BatchJob(FOX), BatchJob(OWL)])  # three images
    painter.draw([BatchJob(replace(FOX, prompt="a red fox, " * 40))])  # more chunks than the warm-up's
    painter.draw([BatchJob(replace(FOX, width=96, height=160))])  # a size of its own
    painter.draw([BatchJob(replace(FOX, cfg=1.0, width=80, height=72))])  # no guidance: one UNet row
    euler = replace(FOX, sampler="Euler", width=72, height=136)  # float timesteps
    painter.draw([BatchJob(euler), BatchJob(replace(euler, seed=5))])
    # The CPU's convolution backend changes with size at several thresholds, each a graph of its own: these
    # sizes lie within the warm-up's.
    painter.draw([BatchJob(replace(euler, cfg=1.0, width=80, height=72))])
    assert len(graphs) == warmed, "no member's job waits for a compile after the warm-up"
    assert not torch._dynamo.utils.counters["graph_break"], "the UNet and the VAE decoder trace whole"
    for left, right in zip(plain, compiled, strict=True):
        for (_, a), (_, b) in zip(left.images, right.images, strict=True):
            assert np.abs(np.asarray(a).astype(int) - np.asarray(b).astype(int)).max() <= TOLERANCE
    with_lora = painter.paint(replace(FOX, prompt="a red fox <lora:detail:1>"))[0]
    assert np.abs(pixels(with_lora.png) - np.asarray(compiled[0].images[0][1]).astype(int)).max() > TOLERANCE
    assert painter.paint(replace(FOX, prompt="a red fox <lora:detail:1>"))[0].png == with_lora.png, (
        "a second LoRA job works: the first one's adapter was taken off"
    )


def test_the_warm_up_keeps_to_what_members_may_ask_and_skips_what_runs_out_of_memory(tiny: LoadedModel) -> None:
    native = tiny.native_size
    everything = warm_up_jobs(native)
    assert {job.params.sampler for batch in everything for job in batch} == set(WARM_UP_SAMPLERS)
    drawn: list[list[BatchJob]] = []

    class SmallGpu(Painter):
        """Runs out of memory on anything larger than the native size."""

        def draw(self, jobs: Sequence[BatchJob], *_args: Any, **_options: Any) -> list[Drawn]:
            drawn.append(list(jobs))
            if jobs[0].params.pixels > native * native:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return []

    told: list[int] = []
    warm_up(SmallGpu(tiny), lambda _number, of: told.append(of), max_images=1, max_pixels=2 * native * native)
    assert drawn == [b for b in everything if len(b) == 1 and b[0].params.pixels <= 2 * native * native]
    assert len(drawn) < len(everything) and told == [len(drawn)] * len(drawn)
    assert any(b[0].params.pixels > native * native for b in drawn), "what ran out of memory was skipped, not fatal"


def test_a_long_prompt_in_the_batch_does_not_change_a_short_ones_image(shelf: ModelShelf) -> None:
    long = replace(OWL, prompt="an owl at night, " * 8, count=1)  # over 75 tokens: two chunks
    painter = shelf.painter("")
    assert [painter.prepare(params) for params in (FOX, long, CAT)] == [1, 2, 1]
    sent = Sent()
    worker = Worker(shelf, sent, Cancels())  # type: ignore[arg-type]
    worker.run_batch([GenerateRequest("fox", FOX), GenerateRequest("owl", long)])
    worker.flush()
    (fox,) = (m for m in sent.messages if isinstance(m, JobResult) and m.job_id == "fox")
    alone = painter.paint(FOX)[0]
    assert np.abs(pixels(fox.images[0].png) - pixels(alone.png)).max() <= TOLERANCE


def test_a_prompt_that_does_not_parse_fails_its_job_alone_and_the_batch_is_drawn(shelf: ModelShelf) -> None:
    sent = Sent()
    worker = Worker(shelf, sent, Cancels())  # type: ignore[arg-type]
    bad = replace(CAT, prompt="a (cat:1.2.3) on a mat")
    assert batch_key(bad) == batch_key(CAT), "its LoRA tags parse, so the bot batches it with the others"
    worker.run_batch([GenerateRequest("fox", FOX), GenerateRequest("bad", bad), GenerateRequest("owl", OWL)])
    worker.flush()
    ends = {m.job_id: m for m in sent.messages if isinstance(m, JobResult | JobFailed)}
    assert ends["bad"] == JobFailed(job_id="bad", message="The weight in `(cat:1.2.3)` must be a number such as 1.2.")
    assert isinstance(ends["fox"], JobResult) and isinstance(ends["owl"], JobResult)
    assert [len(ends[job].images) for job in ("fox", "owl")] == [1, 2]
    assert len(ends) == 3


def test_a_job_whose_tags_do_not_parse_runs_alone() -> None:
    broken = replace(FOX, prompt="a fox <lora:detail:strong>")
    assert batch_key(broken) is None and not compatible(FOX, broken) and not compatible(broken, broken)
    requests = [GenerateRequest("fox", FOX), GenerateRequest("broken", broken), GenerateRequest("cat", CAT)]
    assert [[r.job_id for r in group] for group in batch_groups(requests)] == [["fox"], ["broken"], ["cat"]]


def noise_png(side: int, seed: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (side, side, 3), np.uint8)).save(out, format="PNG")
    return out.getvalue()


def test_upscales_and_variations_of_one_size_share_a_loop_each_from_its_own_source(tiny: LoadedModel) -> None:
    painter = Painter(tiny)
    small, large = (noise_png(32, 1), noise_png(32, 2)), (noise_png(64, 1), noise_png(64, 2))
    for (first, second), (one, two) in (
        (small, (FOX.upscaled((32, 32), seed=3), CAT.upscaled((32, 32), seed=3))),
        (large, (FOX.variation((64, 64), "strong", 3), OWL.variation((64, 64), "strong", 4))),
    ):
        jobs = [BatchJob(one, first), BatchJob(two, second)]
        assert compatible(jobs[0].params, jobs[1].params)
        batched = [painter.finish(drawn)[0] for drawn in painter.draw(jobs)]
        alone = [painter.paint(job.params, source=job.source)[0] for job in jobs]
        for mine, single in zip(batched, alone, strict=True):
            assert mine.infotext == single.infotext
            assert np.abs(pixels(mine.png) - pixels(single.png)).max() <= TOLERANCE
        # Each row started from its own source: the same job over the other source draws something else.
        swapped = painter.paint(jobs[0].params, source=second)[0]
        assert np.abs(pixels(swapped.png) - pixels(batched[0].png)).max() > 10 * TOLERANCE


def test_an_unreadable_source_fails_its_own_job_and_its_batch_partner_is_drawn(shelf: ModelShelf) -> None:
    sent = Sent()
    worker = Worker(shelf, sent, Cancels())  # type: ignore[arg-type]
    good = GenerateRequest("good", FOX.upscaled((32, 32), seed=3), source=noise_png(32, 1))
    bad = GenerateRequest("bad", CAT.upscaled((32, 32), seed=3), source=b"not a picture")
    assert compatible(good.params, bad.params)
    worker.run_batch([good, bad])
    worker.flush()
    ends = {m.job_id: m for m in sent.messages if isinstance(m, JobResult | JobFailed)}
    assert ends["bad"] == JobFailed(job_id="bad", message="The image this works from could not be read as a picture.")
    assert isinstance(ends["good"], JobResult) and len(ends["good"].images) == 1
