"""Infotext read from a member's image: every PNG text chunk kind and EXIF, never more than MAX_INFOTEXT_CHARS."""

from __future__ import annotations

import io
import time

import pytest
from PIL import Image
from PIL.PngImagePlugin import MAX_TEXT_CHUNK, PngInfo

from core.pngmeta import MAX_INFOTEXT_CHARS, InfotextTooLong, embedded_infotext, encode_png, user_comment

INFOTEXT = "a fox, ünïcode 🦊\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 8x8"
LATIN_1 = INFOTEXT.replace(" 🦊", "")  # all that tEXt and zTXt hold


def png(text: str, chunk: str) -> bytes:
    """A 1×1 PNG whose `parameters` is a tEXt, zTXt, iTXt or compressed iTXt chunk, as Pillow writes them."""
    info = PngInfo()
    if chunk.startswith("iTXt"):
        info.add_itxt("parameters", text, zip=chunk == "iTXt compressed")
    else:
        info.add_text("parameters", text, zip=chunk == "zTXt")
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def with_exif(text: str, format: str) -> bytes:
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = user_comment(text)
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format=format, exif=exif.tobytes())
    return buffer.getvalue()


@pytest.mark.parametrize("chunk", ["tEXt", "zTXt", "iTXt", "iTXt compressed"])
def test_every_png_text_chunk_is_read(chunk: str) -> None:
    text = LATIN_1 if chunk in ("tEXt", "zTXt") else INFOTEXT
    assert embedded_infotext(png(text, chunk), "image/png") == text


def test_the_bots_own_pngs_and_a1111_exif_are_read() -> None:
    assert embedded_infotext(encode_png(Image.new("RGB", (2, 2)), INFOTEXT), "image/png") == INFOTEXT
    assert embedded_infotext(with_exif(INFOTEXT, "JPEG"), "image/jpeg") == INFOTEXT
    assert embedded_infotext(with_exif(INFOTEXT, "WEBP"), "image/webp") == INFOTEXT


def test_files_without_parameters_or_not_images_read_as_none() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, format="PNG")
    assert embedded_infotext(buffer.getvalue(), "image/png") is None
    assert embedded_infotext(b"GIF89a", "image/png") is None
    assert embedded_infotext(b"not a jpeg", "image/jpeg") is None
    damaged = png(LATIN_1, "zTXt").replace(b"zTXtparameters\x00\x00x", b"zTXtparameters\x00\x00y")
    assert embedded_infotext(damaged, "image/png") is None


def test_a_zlib_bomb_is_never_inflated_past_the_cap() -> None:
    # A kilobyte of zlib holding a megabyte of one letter: within Pillow's limit, and hours for A1111's pattern.
    bomb = png("a" * MAX_TEXT_CHUNK, "zTXt")
    assert len(bomb) < 2048
    started = time.perf_counter()
    with pytest.raises(InfotextTooLong):
        embedded_infotext(bomb, "image/png")
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize("chunk", ["tEXt", "zTXt", "iTXt", "iTXt compressed"])
def test_text_past_the_cap_is_refused_in_every_chunk_and_at_the_cap_read(chunk: str) -> None:
    assert embedded_infotext(png("é" * MAX_INFOTEXT_CHARS, chunk), "image/png") == "é" * MAX_INFOTEXT_CHARS
    with pytest.raises(InfotextTooLong):
        embedded_infotext(png("é" * (MAX_INFOTEXT_CHARS + 1), chunk), "image/png")


def test_past_pillows_own_limit_is_refused_as_too_long() -> None:
    # Pillow raises "Decompressed Data Too Large" for this one; the reader never gets that far.
    with pytest.raises(InfotextTooLong):
        embedded_infotext(png("a" * (MAX_TEXT_CHUNK + 1), "zTXt"), "image/png")


@pytest.mark.parametrize(("format", "kind"), [("JPEG", "image/jpeg"), ("WEBP", "image/webp")])
def test_exif_past_the_cap_is_refused(format: str, kind: str) -> None:
    assert embedded_infotext(with_exif("a" * MAX_INFOTEXT_CHARS, format), kind) == "a" * MAX_INFOTEXT_CHARS
    with pytest.raises(InfotextTooLong):
        embedded_infotext(with_exif("a" * (MAX_INFOTEXT_CHARS + 1), format), kind)
