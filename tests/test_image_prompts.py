"""Image prompts: sizes that keep the attachment's aspect, metadata checks, and img2img on the tiny model."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bot.imagine.attachments import AttachmentInfo, check_image, decode_image
from core.params import GenerationParams, InvalidParams, JobMode, fit_aspect
from core.source import parse_source
from engine.generate import Painter
from engine.loading import load_model


@pytest.mark.parametrize(
    ("source", "area", "box", "expected"),
    [
        ((1000, 500), 512 * 512, (1536, 1536), (728, 360)),
        ((500, 1000), 512 * 512, (1536, 1536), (360, 728)),
        ((3000, 3000), 512 * 512, (1536, 1536), (512, 512)),
        ((4000, 1000), 512 * 512, (768, 768), (768, 192)),
        ((2000, 100), 512 * 512, (1536, 1536), (1536, 80)),
        ((10, 4000), 64 * 64, (1536, 1536), (64, 1280)),
    ],
)
def test_fit_aspect_keeps_the_shape_within_the_box_in_multiples_of_8(
    source: tuple[int, int], area: int, box: tuple[int, int], expected: tuple[int, int]
) -> None:
    width, height = fit_aspect(source, area, box)
    assert (width, height) == expected
    assert width % 8 == height % 8 == 0 and width <= box[0] and height <= box[1]


def info(**changes: object) -> AttachmentInfo:
    fields: dict[str, object] = dict(
        filename="fox.png", url="http://x/fox.png", content_type="image/png", size=1000, width=640, height=480
    )
    return AttachmentInfo(**{**fields, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "sentence"),
    [
        ({"content_type": "text/plain", "width": None, "height": None}, "fox.png is not a PNG, JPEG or WebP image"),
        ({"content_type": "image/gif"}, "fox.png is not a PNG, JPEG or WebP image"),
        ({"content_type": "image/png", "width": None}, "fox.png is not a PNG, JPEG or WebP image"),
        ({"size": 21 * 2**20}, "fox.png is 21.0 MiB: attach an image of at most 20 MiB."),
        ({"width": 8000, "height": 6000}, "fox.png is 8000×6000 pixels: attach one of at most 17 megapixels"),
    ],
)
def test_metadata_refusals_say_what_to_attach(changes: dict[str, object], sentence: str) -> None:
    with pytest.raises(InvalidParams) as caught:
        check_image(info(**changes))
    assert str(caught.value).startswith(sentence)
    check_image(info(content_type="image/webp"))
    check_image(info(content_type="image/jpeg; charset=binary"))


def test_img2img_on_the_tiny_model_draws_the_attachment_at_its_aspect(tiny_model_dir: Path) -> None:
    painter = Painter(load_model(parse_source(str(tiny_model_dir)), torch.device("cpu")))
    pixels = np.random.default_rng(3).integers(0, 256, (60, 120, 3), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    size = fit_aspect((120, 60), 128 * 64, (256, 256))
    params = GenerationParams(prompt="a fox", width=size[0], height=size[1], steps=4, seed=3, count=2)
    params = GenerationParams(**{**params.to_dict(), "mode": JobMode.IMG2IMG, "strength": 0.5})
    steps: list[tuple[int, int]] = []
    images = painter.paint(params, lambda step, total: steps.append((step, total)), source=buffer.getvalue())
    assert size == (128, 64)
    assert [Image.open(io.BytesIO(i.png)).size for i in images] == [size, size]
    assert steps[-1] == (2, 2), "strength 0.5 of 4 steps"
    assert "Denoising strength: 0.5" in images[0].infotext and "Size: 128x64" in images[0].infotext
    drawn = np.asarray(Image.open(io.BytesIO(images[0].png)).convert("RGB")).astype(np.int16)
    resized = np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.LANCZOS)).astype(np.int16)
    assert not np.array_equal(drawn, resized), "the image was redrawn"
    assert images[0].png != images[1].png, "each image has its own seed"


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "PNG"])
def test_decoding_turns_photos_upright_and_keeps_big_ones_within_the_largest_side(fmt: str) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the camera was turned; the picture is 90° clockwise from its pixels
    buffer = io.BytesIO()
    Image.new("RGB", (40, 20), (200, 10, 10)).save(buffer, format=fmt, exif=exif.tobytes())
    decoded = decode_image(buffer.getvalue(), f"photo.{fmt.lower()}")
    assert decoded.size == (20, 40) and Image.open(io.BytesIO(decoded.png)).size == (20, 40)

    big = io.BytesIO()
    Image.new("RGB", (4000, 1000)).save(big, format=fmt)
    decoded = decode_image(big.getvalue(), "wide")
    assert decoded.size == (4000, 1000) and Image.open(io.BytesIO(decoded.png)).size == (2048, 512)


def test_decoding_refuses_what_is_not_a_png_jpeg_or_webp() -> None:
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, format="GIF")
    for data in (gif.getvalue(), b"\x89PNG\r\n\x1a\nbroken"):
        with pytest.raises(InvalidParams):
            decode_image(data, "x")
