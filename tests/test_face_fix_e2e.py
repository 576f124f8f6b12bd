"""The face fix wired in: 🙂 Fix faces on a result, the member's face_fix setting, and the engine redrawing the
faces of a real photograph (scikit-image's astronaut) with the tiny model's inpainting, nothing far from them."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.data import astronaut

from bot.app import SdBot
from core.infotext import parse_infotext
from core.params import FACE_FIX_STRENGTH, GenerationParams, InvalidParams, JobMode
from core.pngmeta import encode_png
from core.source import parse_source
from engine.face_fix import NO_FACE, FaceDetector
from engine.generate import BatchJob, Painter
from engine.loading import LoadedModel, load_model
from tests.support.bots import answer, make_bot, results
from tests.support.fake_discord import USER_ID, FakeDiscord
from tests.support.fake_engine import FakeEngine
from tests.test_buttons_e2e import job_id_of


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> LoadedModel:
    return load_model(parse_source(str(tiny_model_dir)), torch.device("cpu"))


def photo_png() -> bytes:
    return encode_png(Image.fromarray(astronaut()), "a photo of an astronaut")


def test_fixing_faces_redraws_only_near_the_face_of_a_real_photograph(tiny: LoadedModel) -> None:
    painter = Painter(tiny)
    params = GenerationParams(prompt="portrait of a woman, detailed face", steps=4, seed=9).faces_fixed((512, 512), 9)
    assert params.mode is JobMode.FACES and params.strength == FACE_FIX_STRENGTH
    (image,) = painter.paint(params, source=photo_png())
    before = astronaut().astype(int)
    after = np.asarray(Image.open(io.BytesIO(image.png)).convert("RGB")).astype(int)
    (face,) = FaceDetector().detect(Image.fromarray(astronaut()))
    changed = np.abs(after - before).max(axis=2) > 0
    ys, xs = np.nonzero(changed)
    assert len(ys) > 0.25 * face.width * face.height, "the face was redrawn"
    centre_x, centre_y = face.x + face.width / 2, face.y + face.height / 2
    # Nothing changes farther from the face than its redrawn region reaches (the crop is twice its side).
    assert np.abs(xs - centre_x).max() <= face.width and np.abs(ys - centre_y).max() <= face.height
    info = parse_infotext(image.infotext)
    assert info is not None
    assert info.get("ADetailer model") == "haarcascade_frontalface_default.xml"
    assert info.get("ADetailer denoising strength") == "0.4"


def test_no_face_is_a_sentence_and_a_kept_face_fix_leaves_faceless_images_be(tiny: LoadedModel) -> None:
    painter = Painter(tiny)
    grey = encode_png(Image.new("RGB", (256, 256), (128, 128, 128)), "")
    with pytest.raises(InvalidParams, match=NO_FACE):
        painter.paint(GenerationParams(prompt="x", steps=3, seed=1).faces_fixed((256, 256), 1), source=grey)
    plain = GenerationParams(prompt="a red fox", width=64, height=64, steps=2, seed=4)
    (without,) = painter.paint(plain)
    (kept_on,) = painter.paint(replace(plain, face_fix=True))
    # The tiny model draws no faces: the image is the same, and the infotext says the fix ran.
    assert Image.open(io.BytesIO(kept_on.png)).tobytes() == Image.open(io.BytesIO(without.png)).tobytes()
    assert "ADetailer model: haarcascade_frontalface_default.xml" in kept_on.infotext


@pytest.fixture
async def bot(fake: FakeDiscord, engine: FakeEngine, tmp_path: Path) -> AsyncIterator[SdBot]:
    client = make_bot(tmp_path, engine)
    async with fake.connected(client):
        yield client


async def test_the_fix_faces_button_and_the_face_fix_setting(fake: FakeDiscord, bot: SdBot, engine: FakeEngine) -> None:
    inter = await fake.slash("settings", {"face_fix": True}, user_id=USER_ID)
    assert "**Face fix:** on — your setting" in await answer(inter)
    inter = await fake.slash("imagine", {"prompt": "a portrait", "steps": 2, "seed": 3}, user_id=USER_ID)
    await inter.wait_response()
    (result,) = await fake.wait_for(lambda: results(fake) or None)
    assert engine.calls[-1][1].face_fix
    assert f"sdbot:faces:{job_id_of(result)}:1" in result.custom_ids()
    press = await fake.press(result, f"sdbot:faces:{job_id_of(result)}:1", user_id=USER_ID)
    await press.wait_response()
    await fake.wait_for(lambda: len(engine.calls) == 2 or None)
    child = engine.calls[-1][1]
    assert (child.mode, child.strength, child.seed, child.face_fix) == (JobMode.FACES, FACE_FIX_STRENGTH, 3, False)


class RecordingFaces(Painter):
    """The real painter, recording which job's prompt and which seed each image's face fix is given."""

    asked: list[tuple[str, int]]

    def _fix_faces(
        self, image: Image.Image, params: GenerationParams, seed: int, required: bool = False
    ) -> Image.Image:
        self.asked.append((params.prompt, seed))
        return image


def test_a_batch_fixes_each_images_faces_with_its_own_jobs_prompt(tiny: LoadedModel) -> None:
    painter = RecordingFaces(tiny)
    painter.asked = []
    base = GenerationParams(prompt="x", width=64, height=64, steps=2, face_fix=True)
    jobs = [replace(base, prompt="an old man", seed=1), replace(base, prompt="a young woman", seed=7, count=2)]
    painter.draw([BatchJob(params) for params in jobs])
    assert painter.asked == [("an old man", 1), ("a young woman", 7), ("a young woman", 8)]
