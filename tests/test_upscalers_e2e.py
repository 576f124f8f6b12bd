"""Upscaler models wired in: the U button runs the server's pick (else the first installed, else Lanczos), the hires
fix may name one, the engine runs them tiled, and the infotext says which ran."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image

from bot.app import SdBot
from core.params import LANCZOS, GenerationParams, InvalidParams, JobMode
from core.source import parse_source
from core.upscaler_files import UpscalerFolder
from engine.generate import Painter
from engine.loading import LoadedModel, load_model
from engine.upscaler_shelf import UpscalerShelf
from tests.support.bots import answer, autocomplete, make_bot, results
from tests.support.fake_discord import OWNER_ID, USER_ID, FakeDiscord, FakeMessage
from tests.support.fake_engine import FakeEngine
from tests.support.tiny_esrgan import write_tiny_esrgan
from tests.test_buttons_e2e import first_result, job_id_of


@pytest.fixture
def upscalers_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "upscalers"
    write_tiny_esrgan(folder / "4x-tiny.safetensors", scale=4)
    write_tiny_esrgan(folder / "RealESRGAN-tiny.safetensors", scale=2, seed=1)
    return folder


@pytest.fixture
async def bot(fake: FakeDiscord, engine: FakeEngine, tmp_path: Path, upscalers_dir: Path) -> AsyncIterator[SdBot]:
    client = make_bot(tmp_path, engine, upscalers_dir=upscalers_dir)
    async with fake.connected(client):
        yield client


async def admin(fake: FakeDiscord, **options: object) -> str:
    inter = await fake.slash("sdadmin", options, subcommand="upscaler", user_id=OWNER_ID)
    text = await answer(inter)
    assert inter.ephemeral
    return text


async def upscale_press(fake: FakeDiscord, engine: FakeEngine, grid: FakeMessage) -> GenerationParams:
    before = len(engine.calls)
    press = await fake.press(grid, f"sdbot:upscale:{job_id_of(grid)}:1", user_id=USER_ID)
    await press.wait_response()
    await fake.wait_for(lambda: len(engine.calls) > before or None)
    return engine.calls[-1][1]


async def test_the_u_button_runs_the_servers_pick_else_the_first_installed(
    fake: FakeDiscord, bot: SdBot, engine: FakeEngine
) -> None:
    grid = await first_result(fake, {"prompt": "fox", "steps": 2, "seed": 40, "width": 256, "height": 256})
    assert (await admin(fake)).startswith("The U button runs **4x-tiny** here (the default), then a light redraw.")
    assert (await upscale_press(fake, engine, grid)).upscaler == "4x-tiny"
    choices = await autocomplete(fake, "sdadmin", {"name": "real"}, "name", subcommand="upscaler", user_id=OWNER_ID)
    assert [c["value"] for c in choices] == ["RealESRGAN-tiny"]
    assert (
        await admin(fake, name="realesrgan-TINY")
        == "The U button now runs **RealESRGAN-tiny** here, then a light redraw."
    )
    assert (await upscale_press(fake, engine, grid)).upscaler == "RealESRGAN-tiny"
    assert (await admin(fake, name="4x-tinny")).startswith("No upscaler called `4x-tinny` is installed. Did you mean")
    assert await admin(fake, name="lanczos") == "The U button now runs **Lanczos** here, then a light redraw."
    assert (await upscale_press(fake, engine, grid)).upscaler == LANCZOS


async def test_a_hires_fix_naming_an_upscaler_that_is_not_installed_gets_a_sentence(
    fake: FakeDiscord, bot: SdBot, engine: FakeEngine
) -> None:
    inter = await fake.slash("settings", {"hires": "2×", "hires_strength": 0.4}, user_id=USER_ID)
    await answer(inter)
    bot.intake.installed.check(GenerationParams(prompt="x", hires=2.0, hires_upscaler="4x-tiny"))
    with pytest.raises(InvalidParams, match="No upscaler called `R-ESRGAN 4x\\+` is installed: use Latent, Lanczos"):
        bot.intake.installed.check(GenerationParams(prompt="x", hires=2.0, hires_upscaler="R-ESRGAN 4x+"))


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> LoadedModel:
    return load_model(parse_source(str(tiny_model_dir)), torch.device("cpu"))


def test_the_engine_upscales_with_a_model_and_the_infotext_names_it(tiny: LoadedModel, upscalers_dir: Path) -> None:
    shelf = UpscalerShelf(UpscalerFolder(upscalers_dir), allow_pickle=False, device=tiny.device, dtype=tiny.dtype)
    painter = Painter(tiny, upscalers=shelf)
    first = painter.paint(GenerationParams(prompt="a fox", width=64, height=64, steps=2, seed=3))[0]
    upscale = GenerationParams(prompt="a fox", steps=4, seed=3).upscaled((64, 64), seed=3, upscaler="4x-tiny")
    (image,) = painter.paint(upscale, source=first.png)
    assert Image.open(io.BytesIO(image.png)).size == (128, 128)
    assert "Denoising strength: 0.3, Postprocess upscale by: 2, Postprocess upscaler: 4x-tiny" in image.infotext
    # The model's enlargement, not Lanczos's, is what the detail pass redraws.
    lanczos = painter.paint(replace(upscale, upscaler=LANCZOS), source=first.png)[0]
    assert lanczos.png != image.png
    hires = GenerationParams(prompt="a fox", width=64, height=64, steps=2, seed=3, hires=2.0)
    (drawn,) = painter.paint(replace(hires, hires_upscaler="RealESRGAN-tiny"))
    assert Image.open(io.BytesIO(drawn.png)).size == (128, 128)
    assert drawn.infotext.endswith("Hires upscaler: RealESRGAN-tiny")
    # Released with the model's caches (a model switch), and loaded again when next used.
    painter.release_caches()
    assert painter.paint(upscale, source=first.png)[0].png == image.png
    with pytest.raises(InvalidParams, match="The upscaler gone is not installed"):
        painter.paint(replace(upscale, upscaler="gone"), source=first.png)
    assert upscale.mode is JobMode.UPSCALE


def test_an_unusable_upscaler_file_is_one_line_and_the_rest_keep_working(
    tiny: LoadedModel, upscalers_dir: Path
) -> None:
    (upscalers_dir / "notes.safetensors").write_bytes(b"not a model")
    write_tiny_esrgan(upscalers_dir / "old.pth", scale=2)
    shelf = UpscalerShelf(UpscalerFolder(upscalers_dir), allow_pickle=False, device=tiny.device, dtype=tiny.dtype)
    problems = shelf.check()
    assert len(problems) == 2 and all("\n" not in line for line in problems)
    assert any(line.startswith(str(upscalers_dir / "notes.safetensors")) for line in problems)
    assert any("set SDBOT_ALLOW_PICKLE=1" in line for line in problems)
    enlarged = shelf.enlarge(Image.new("RGB", (32, 24), "red"), (64, 48), "4x-tiny")
    assert enlarged.size == (64, 48)


async def test_u_presses_on_images_of_one_size_share_a_batch_each_with_its_own_source(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    engine = FakeEngine(max_batch=4)
    bot = make_bot(tmp_path, engine)
    async with fake.connected(bot):
        for number, (prompt, width) in enumerate([("fox", 256), ("owl", 256), ("cat", 384)], start=1):
            options = {"prompt": prompt, "steps": 2, "count": 4, "width": width, "height": 256}
            await (await fake.slash("imagine", options)).wait_response()
            await fake.wait_for(lambda n=number: len(results(fake)) == n or None, what="the grids")
        grid, other, wide = results(fake)
        engine.gate.clear()
        # A job holds the engine while the presses queue.
        await (await fake.slash("imagine", {"prompt": "busy", "steps": 2})).wait_response()
        await engine.wait_calls(4)
        # By four members: a member's jobs take one turn each round, so one member's would not share a batch.
        presses = [(grid, 1, USER_ID + 10), (other, 2, USER_ID + 11), (wide, 1, USER_ID + 12), (grid, 3, USER_ID + 13)]
        for message, image, member in presses:
            press = await fake.press(message, f"sdbot:upscale:{job_id_of(message)}:{image}", user_id=member)
            await press.wait_response()
        # The acknowledgement may come before the job is in the queue.
        await fake.wait_for(lambda: len(bot.shared.queue) == len(presses) or None, what="the presses queued")
        engine.gate.set()
        await fake.wait_for(lambda: len(engine.calls) == 4 + len(presses) or None, what="the upscales")
    ups = [(job_id, params) for job_id, params in engine.calls if params.mode is JobMode.UPSCALE]
    sizes = {job_id: (params.width, params.height) for job_id, params in ups}
    assert sorted(sizes.values()) == [(512, 512), (512, 512), (512, 512), (768, 512)]
    # The three of one size were drawn together, the wide one apart; each carried the image it enlarges.
    batches = [sorted(sizes[job] for job in batch) for batch in engine.batches if set(batch) <= set(sizes)]
    assert sorted(batches) == [[(512, 512)] * 3, [(768, 512)]]
    sources = [engine.sources[job_id] for job_id, _ in ups]
    assert all(sources) and len(set(sources)) == 4


async def test_the_hires_fix_upscales_with_the_servers_default_upscaler_else_latent(
    fake: FakeDiscord, bot: SdBot, engine: FakeEngine
) -> None:
    async def hires_upscaler() -> str:
        before = len(engine.calls)
        options = {"prompt": "fox", "steps": 2, "width": 256, "height": 256, "hires": "2×"}
        await (await fake.slash("imagine", options, user_id=USER_ID)).wait_response()
        await fake.wait_for(lambda: len(engine.calls) > before or None)
        return engine.calls[-1][1].hires_upscaler

    async def shown() -> str:
        return await answer(await fake.slash("settings", {}, user_id=USER_ID))

    # Neither the member nor the model names one: the U button's default here, the first installed model.
    assert await hires_upscaler() == "4x-tiny"
    assert "**Hires upscaler:** 4x-tiny — the bot's default" in await shown()
    await admin(fake, name="RealESRGAN-tiny")
    assert await hires_upscaler() == "RealESRGAN-tiny"
    # Lanczos picked for the U button: the hires fix keeps A1111's own default.
    await admin(fake, name="Lanczos")
    assert await hires_upscaler() == "Latent"
    # The member's own choice wins over the server's.
    await answer(await fake.slash("settings", {"hires_upscaler": "4x-tiny"}, user_id=USER_ID))
    await admin(fake, name="RealESRGAN-tiny")
    assert await hires_upscaler() == "4x-tiny"
