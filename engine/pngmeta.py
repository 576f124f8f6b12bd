"""PNG files that carry A1111 infotext in their `parameters` text chunk."""

from __future__ import annotations

import io

from PIL import Image
from PIL.PngImagePlugin import PngInfo


def encode_png(image: Image.Image, infotext: str) -> bytes:
    """The PNG bytes of `image` with `infotext` as the `parameters` chunk A1111's PNG Info reads."""
    info = PngInfo()
    info.add_text("parameters", infotext)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()
