"""Image sizes as Discord reports them for attachments and embeds."""

from __future__ import annotations

import io
import struct

from PIL import Image, UnidentifiedImageError


def png_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG header, as Discord reports them for images."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24 and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return width, height
    return None


def image_size(data: bytes, content_type: str) -> tuple[int, int] | None:
    """Width and height of any image Discord recognises (PNG from its header, others by decoding the header)."""
    dims = png_size(data)
    if dims is not None or not content_type.startswith("image/"):
        return dims
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except (UnidentifiedImageError, OSError):
        return None
