"""Image files that carry A1111 infotext: PNG in its `parameters` text chunk, WebP and JPEG in EXIF UserComment."""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image
from PIL.PngImagePlugin import PngInfo

_EXIF_IFD = 0x8769
_USER_COMMENT = 0x9286
# EXIF UserComment starts with an 8-byte character code; A1111 (through piexif) writes UTF-16 big-endian.
_UNICODE = b"UNICODE\x00"


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


def user_comment(infotext: str) -> bytes:
    """An EXIF UserComment as A1111 writes it for WebP and JPEG."""
    return _UNICODE + infotext.encode("utf-16-be")


def read_user_comment(data: bytes) -> str | None:
    """The infotext in a WebP or JPEG file's EXIF UserComment, if any."""
    comment = Image.open(io.BytesIO(data)).getexif().get_ifd(_EXIF_IFD).get(_USER_COMMENT)
    if not isinstance(comment, bytes) or not comment.startswith(_UNICODE):
        return None
    return comment[len(_UNICODE) :].decode("utf-16-be")


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
