"""External VAEs wired in: a `<checkpoint>.vae.safetensors` beside a model and one its sidecar names are found by
the catalog, the job carries the file's name, the engine decodes with it, and the infotext names it as A1111 does;
a server's /sdadmin vae pick applies to models that name none."""

from __future__ import annotations

import hashlib
import io
import shutil
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bot.app import SdBot
from bot.models.picker import Models
from core.catalog import scan
from core.params import GenerationParams, InvalidParams
from core.pngmeta import encode_png
from core.source import parse_source
from core.vae_files import VaeFolder
from engine.generate import Painter
from engine.loading import load_model
from engine.vae_switch import VaeFiles, VaeSwitch
from tests.support.bots import answer, make_bot
from tests.support.community import private_followup
from tests.support.fake_discord import CHANNEL_ID, OWNER_ID, USER_ID, FakeDiscord, FakeFile
from tests.support.fake_engine import FakeEngine
from tests.support.tiny_model import build_tiny_vae, save_tiny_model
from tests.test_vae_files import save_vae

FOX = GenerationParams(prompt="a red fox", width=64, height=64, steps=2, seed=5)


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


@pytest.fixture
def folders(tiny_model_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A models folder with two copies of the tiny model: `beside` has its VAE beside it, `named` names one in
    SDBOT_VAE_DIR in its sidecar; and that VAE folder."""
    models, vaes = tmp_path / "models", tmp_path / "vae"
    for name in ("beside", "named", "plain"):
        shutil.copytree(tiny_model_dir, models / name)
    torch.manual_seed(1)
    save_vae(build_tiny_vae(), models / "beside.vae.safetensors")
    torch.manual_seed(2)
    save_vae(build_tiny_vae(), vaes / "vae-ft-tiny.safetensors")
    (models / "named" / "sdbot.json").write_text('{"vae": "vae-ft-tiny.safetensors"}')
    return models, vaes


def test_the_catalog_finds_each_models_vae_and_the_engine_decodes_with_it(folders: tuple[Path, Path]) -> None:
    models, vaes = folders
    catalog = scan(models, VaeFolder(vaes))
    assert sorted(catalog.entries) == ["beside", "named", "plain"]  # the VAE beside a model is no model
    assert [catalog.entries[n].vae for n in ("beside", "named", "plain")] == [
        "beside.vae.safetensors",
        "vae-ft-tiny.safetensors",
        "",
    ]
    model = load_model(parse_source(str(models / "plain")), torch.device("cpu"))
    painter = Painter(model, vaes=VaeFiles(VaeFolder(vaes), models))
    own = painter.paint(FOX)[0]
    assert "VAE" not in own.infotext
    for name in ("vae-ft-tiny.safetensors", "beside.vae.safetensors"):
        (image,) = painter.paint(replace(FOX, vae=name))
        path = vaes / name if (vaes / name).exists() else models / name
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:10]
        assert f"Model: plain, VAE hash: {digest}, VAE: {name}" in image.infotext
        decoded = np.asarray(Image.open(io.BytesIO(image.png))).astype(int)
        assert np.abs(decoded - np.asarray(Image.open(io.BytesIO(own.png))).astype(int)).max() > 6
    # Back to the checkpoint's own VAE: the same pixels as before any swap.
    assert painter.paint(FOX)[0].png == own.png
    with pytest.raises(InvalidParams, match="The VAE gone.safetensors is not installed"):
        painter.paint(replace(FOX, vae="gone.safetensors"))


def test_the_inpainting_checkpoint_decodes_with_the_jobs_vae_too(folders: tuple[Path, Path], tmp_path: Path) -> None:
    models, vaes = folders
    cpu = torch.device("cpu")
    model = load_model(parse_source(str(models / "plain")), cpu)
    inpainting_dir = save_tiny_model(tmp_path / "inpainting", seed=1, in_channels=9)
    inpainting = load_model(parse_source(str(inpainting_dir)), cpu, inpainting=True, setting="SDBOT_INPAINT_MODEL")
    files = VaeFiles(VaeFolder(vaes), models)
    # As the engine process does: one switch for the inpainting checkpoint, whichever painter uses it.
    switch = VaeSwitch(inpainting, files)
    painter = Painter(model, inpainting, vaes=files, inpaint_vae=switch)
    source = painter.paint(FOX)[0].png
    pan = FOX.panned((64, 64), "right", seed=3)
    own = painter.paint(pan, source=source)[0]
    named = painter.paint(replace(pan, vae="vae-ft-tiny.safetensors"), source=source)[0]
    assert "VAE: vae-ft-tiny.safetensors" in named.infotext
    assert switch.current == "vae-ft-tiny.safetensors"
    assert np.abs(pixels(named.png) - pixels(own.png)).max() > 6
    # A painter made again over the same checkpoints (a switch back to the default model) shares the switch, so the
    # inpainting checkpoint's own VAE comes back for a job naming none.
    again = Painter(model, inpainting, vaes=files, inpaint_vae=switch)
    assert again.paint(pan, source=source)[0].png == own.png


def test_a_sidecar_vae_that_is_missing_or_of_another_family_is_one_line_and_not_used(
    folders: tuple[Path, Path],
) -> None:
    models, vaes = folders
    (models / "named" / "sdbot.json").write_text('{"vae": "missing.safetensors"}')
    torch.manual_seed(3)
    save_vae(
        build_tiny_vae(),
        models / "plain.vae.safetensors",
        metadata={"modelspec.architecture": "stable-diffusion-xl-v1-base/vae"},
    )
    catalog = scan(models, VaeFolder(vaes))
    assert catalog.entries["named"].vae == catalog.entries["plain"].vae == ""
    assert "named: its sidecar's VAE missing.safetensors is not in SDBOT_VAE_DIR" in catalog.skipped
    (refused,) = [line for line in catalog.skipped if line.startswith(str(models / "plain.vae.safetensors"))]
    assert "an SDXL VAE" in refused and "\n" not in refused


@pytest.fixture
async def bot(
    fake: FakeDiscord, engine: FakeEngine, tmp_path: Path, folders: tuple[Path, Path]
) -> AsyncIterator[SdBot]:
    models, vaes = folders
    catalog = scan(models, VaeFolder(vaes))
    client = make_bot(
        tmp_path,
        engine,
        models=Models(catalog=catalog, folder=models, default_location=str(models / "plain"), vaes=VaeFolder(vaes)),
        vae_dir=vaes,
    )
    async with fake.connected(client):
        yield client


async def drawn(fake: FakeDiscord, engine: FakeEngine, **options: object) -> GenerationParams:
    before = len(engine.calls)
    inter = await fake.slash("imagine", {"prompt": "a fox", **options}, user_id=USER_ID)
    await inter.wait_response()
    await fake.wait_for(lambda: len(engine.calls) > before or None)
    return engine.calls[-1][1]


async def test_jobs_carry_the_models_vae_else_the_servers_pick(
    fake: FakeDiscord, bot: SdBot, engine: FakeEngine
) -> None:
    assert (await drawn(fake, engine, model="beside")).vae == "beside.vae.safetensors"
    assert (await drawn(fake, engine, model="named")).vae == "vae-ft-tiny.safetensors"
    assert (await drawn(fake, engine)).vae == ""
    inter = await fake.slash("sdadmin", {"default": "VAE-FT-TINY.safetensors"}, subcommand="vae", user_id=OWNER_ID)
    assert await answer(inter) == "Models that name no VAE now decode with **vae-ft-tiny.safetensors** here."
    assert (await drawn(fake, engine)).vae == "vae-ft-tiny.safetensors"
    assert (await drawn(fake, engine, model="beside")).vae == "beside.vae.safetensors"  # its own choice wins
    # A pick of another family than the model's is not used for it; the default model's family counts too.
    torch.manual_seed(4)
    vaes = bot.shared.files.vae_folder
    assert vaes is not None
    save_vae(
        build_tiny_vae(),
        vaes.path / "sdxl_vae.safetensors",
        {"modelspec.architecture": "stable-diffusion-xl-v1-base/vae"},
    )
    inter = await fake.slash("sdadmin", {"default": "sdxl_vae.safetensors"}, subcommand="vae", user_id=OWNER_ID)
    await answer(inter)
    assert (await drawn(fake, engine)).vae == ""
    inter = await fake.slash("sdadmin", {"default": "none"}, subcommand="vae", user_id=OWNER_ID)
    assert await answer(inter) == "Models that name no VAE now decode with **None** here."
    assert (await drawn(fake, engine)).vae == ""


async def test_read_settings_run_with_the_servers_vae_pick(fake: FakeDiscord, bot: SdBot, engine: FakeEngine) -> None:
    inter = await fake.slash("sdadmin", {"default": "vae-ft-tiny.safetensors"}, subcommand="vae", user_id=OWNER_ID)
    await answer(inter)
    infotext = "a fox\nSteps: 3, Sampler: Euler a, CFG scale: 7, Seed: 5, Size: 64x64"
    upload = FakeFile("fox.png", encode_png(Image.new("RGB", (64, 64)), infotext), "image/png")
    posted = await fake.post_files_as_user(CHANNEL_ID, [upload], user_id=USER_ID)
    settings = await private_followup(fake, await fake.context_menu("Read parameters", posted, user_id=USER_ID))
    (run,) = settings.custom_ids()
    await (await fake.press(settings, run)).wait_response()
    await engine.wait_calls(1)
    assert engine.calls[-1][1].vae == "vae-ft-tiny.safetensors"
