"""Image files that carry A1111 infotext: PNG in its `parameters` text chunk, WebP and JPEG in EXIF UserComment."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image
from PIL.PngImagePlugin import PngInfo

_EXIF_IFD = 0x8769
_USER_COMMENT = 0x9286
# EXIF UserComment starts with an 8-byte character code; A1111 (through piexif) writes UTF-16 big-endian.
_UNICODE = b"UNICODE\x00"
# A member's image may carry any amount of text where its parameters belong; this is far above any real infotext
# (A1111's, with hires prompts and a dozen LoRA hashes, stay within a few KiB) and parses in milliseconds.
MAX_INFOTEXT_CHARS = 16 * 1024
# No encoding read here takes more than four bytes a character.
_MAX_TEXT_BYTES = 4 * MAX_INFOTEXT_CHARS
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_KEYWORD = b"parameters"


class InfotextTooLong(ValueError):
    """An image's parameters text runs past MAX_INFOTEXT_CHARS, so it is not read."""


@dataclass(frozen=True)
class EncodedImage:
    """Bytes ready to upload, and the file extension they need."""

    data: bytes
    extension: str


def encode_png(image: Image.Image, infotext: str) -> bytes:
    """The PNG bytes of `image` with `infotext` as the `parameters` chunk A1111's PNG Info reads."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=_png_info(infotext))
    return buffer.getvalue()


def infotext_of(png: bytes) -> str:
    """The infotext in a PNG's `parameters` chunk ("" when there is none)."""
    return str(Image.open(io.BytesIO(png)).info.get("parameters", ""))


def embedded_infotext(data: bytes, content_type: str) -> str | None:
    """A member's image's infotext (PNG text chunk, JPEG or WebP EXIF) or None; InfotextTooLong past the cap."""
    if content_type == "image/png":
        return png_parameters(data)
    try:
        return read_user_comment(data)
    except InfotextTooLong:
        raise
    except (OSError, ValueError, Image.DecompressionBombError):
        return None  # not an image Pillow reads, or no EXIF it can parse


def png_parameters(png: bytes) -> str | None:
    """The `parameters` text chunk of a PNG, as tEXt, zTXt or iTXt; None when it has none or is no PNG."""
    if not png.startswith(_PNG_SIGNATURE):
        return None
    offset = len(_PNG_SIGNATURE)
    while offset + 8 <= len(png):
        length, kind = struct.unpack_from(">I4s", png, offset)
        start, offset = offset + 8, offset + 12 + length
        if kind == b"IEND":
            break
        read = _TEXT_CHUNKS.get(kind)
        if read is None:
            continue
        keyword, _, body = png[start : start + length].partition(b"\0")
        if keyword != _KEYWORD:
            continue
        try:
            return read(body)
        except (zlib.error, IndexError):
            return None  # a damaged chunk reads as none, as it does in an image viewer
    return None


def _text(body: bytes) -> str:
    # tEXt: Latin-1.
    return _decoded(body, "latin-1")


def _ztxt(body: bytes) -> str:
    # zTXt: a compression method byte (0, zlib), then the compressed Latin-1 text.
    return _decoded(_inflated(body[1:]), "latin-1")


def _itxt(body: bytes) -> str:
    # iTXt: compression flag and method, language and translated keyword (each NUL-ended), then UTF-8 text.
    compressed = body[0] == 1
    _language, _, rest = body[2:].partition(b"\0")
    _translated, _, text = rest.partition(b"\0")
    return _decoded(_inflated(text) if compressed else text, "utf-8")


_TEXT_CHUNKS: dict[bytes, Callable[[bytes], str]] = {b"tEXt": _text, b"zTXt": _ztxt, b"iTXt": _itxt}


def _inflated(data: bytes) -> bytes:
    # Inflates no further than the cap, whatever the chunk would inflate to (a kilobyte of zlib can hold a
    # megabyte of one letter).
    text = zlib.decompressobj().decompress(data, _MAX_TEXT_BYTES + 1)
    if len(text) > _MAX_TEXT_BYTES:
        raise InfotextTooLong(f"the parameters text inflates to more than {_MAX_TEXT_BYTES} bytes")
    return text


def _decoded(raw: bytes, encoding: str) -> str:
    if len(raw) > _MAX_TEXT_BYTES:
        raise InfotextTooLong(f"the parameters text is {len(raw)} bytes")
    text = raw.decode(encoding, errors="replace")
    if len(text) > MAX_INFOTEXT_CHARS:
        raise InfotextTooLong(f"the parameters text is {len(text)} characters")
    return text


def user_comment(infotext: str) -> bytes:
    """An EXIF UserComment as A1111 writes it for WebP and JPEG."""
    return _UNICODE + infotext.encode("utf-16-be")


def read_user_comment(data: bytes) -> str | None:
    """The infotext in a WebP or JPEG file's EXIF UserComment, if any (InfotextTooLong past the cap)."""
    comment = Image.open(io.BytesIO(data)).getexif().get_ifd(_EXIF_IFD).get(_USER_COMMENT)
    if not isinstance(comment, bytes) or not comment.startswith(_UNICODE):
        return None
    return _decoded(comment[len(_UNICODE) :], "utf-16-be")


def _encode(image: Image.Image, infotext: str, format: str, quality: int) -> bytes:
    exif = Image.Exif()
    exif.get_ifd(_EXIF_IFD)[_USER_COMMENT] = user_comment(infotext)
    buffer = io.BytesIO()
    image.save(buffer, format=format, quality=quality, exif=exif.tobytes())
    return buffer.getvalue()


def fit_under(png: bytes, limit: int) -> EncodedImage:
    """The PNG itself when it fits Discord's upload limit, else the best WebP (then JPEG) that does.

    The infotext travels along in EXIF UserComment, so A1111 and civitai still read it.
    """
    if len(png) <= limit:
        return EncodedImage(png, "png")
    image = Image.open(io.BytesIO(png))
    infotext = image.info.get("parameters", "")
    rgb = image.convert("RGB")
    for format, extension in (("WEBP", "webp"), ("JPEG", "jpg")):
        for quality in (95, 90, 80, 70, 60, 50, 40):
            data = _encode(rgb, infotext, format, quality)
            if len(data) <= limit:
                return EncodedImage(data, extension)
    # Past this, shrink: halving the side quarters the bytes; the infotext still says the original size.
    smaller = rgb.resize((max(1, rgb.width // 2), max(1, rgb.height // 2)), Image.Resampling.LANCZOS)
    return fit_under(encode_png(smaller, infotext), limit)


def _png_info(infotext: str) -> PngInfo:
    info = PngInfo()
    info.add_text("parameters", infotext)
    return info
