"""Images members hand the bot: checked from Discord's metadata first, then downloaded with a cap and decoded."""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass

import aiohttp
import discord
from PIL import Image, ImageOps, UnidentifiedImageError

from core.params import MAX_DERIVED_SIZE, InvalidParams

IMAGE_TYPES = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP"}
MAX_IMAGE_BYTES = 20 * 1024 * 1024
# 16 megapixels: a 4096×4096 photo; anything larger would only be scaled down, at the cost of memory.
MAX_IMAGE_PIXELS = 4096 * 4096
_CHUNK = 64 * 1024
_DOWNLOAD_TIMEOUT = aiohttp.ClientTimeout(total=20)


@dataclass(frozen=True)
class AttachmentInfo:
    """What Discord says about an attachment, before a byte of it is downloaded."""

    filename: str
    url: str
    content_type: str | None
    size: int
    width: int | None
    height: int | None

    @classmethod
    def of(cls, attachment: discord.Attachment) -> AttachmentInfo:
        """What Discord said about `attachment`, as the services read it."""
        return cls(
            filename=attachment.filename,
            url=attachment.url,
            content_type=attachment.content_type,
            size=attachment.size,
            width=attachment.width,
            height=attachment.height,
        )


def check_image(info: AttachmentInfo) -> None:
    """InvalidParams with a sentence unless the metadata says a PNG, JPEG or WebP of a size the bot takes."""
    kind = (info.content_type or "").split(";")[0].strip().lower()
    if kind not in IMAGE_TYPES or info.width is None or info.height is None:
        raise InvalidParams(f"{info.filename} is not a PNG, JPEG or WebP image: attach one of those.")
    if info.size > MAX_IMAGE_BYTES:
        size = f"{info.size / 2**20:.1f} MiB"
        raise InvalidParams(f"{info.filename} is {size}: attach an image of at most {MAX_IMAGE_BYTES // 2**20} MiB.")
    if info.width * info.height > MAX_IMAGE_PIXELS:
        raise InvalidParams(
            f"{info.filename} is {info.width}×{info.height} pixels: attach one of at most"
            f" {MAX_IMAGE_PIXELS / 1e6:.0f} megapixels (e.g. 4096×4096)."
        )


async def download(info: AttachmentInfo, cap: int = MAX_IMAGE_BYTES) -> bytes:
    """The attachment's bytes, stopping (InvalidParams) as soon as more than `cap` arrive, whatever it claimed."""
    failed = InvalidParams(f"I couldn't download {info.filename} from Discord: try attaching it again.")
    try:
        async with aiohttp.ClientSession(timeout=_DOWNLOAD_TIMEOUT) as session, session.get(info.url) as response:
            if response.status != 200:
                raise failed
            data = bytearray()
            async for chunk in response.content.iter_chunked(_CHUNK):
                data += chunk
                if len(data) > cap:
                    raise InvalidParams(
                        f"{info.filename} is larger than it said: attach an image of at most {cap // 2**20} MiB."
                    )
    except (aiohttp.ClientError, asyncio.TimeoutError):
        raise failed from None
    return bytes(data)


@dataclass(frozen=True)
class DecodedImage:
    """A member's image, upright, as the PNG the engine and the image store take, and its full size."""

    png: bytes
    size: tuple[int, int]


def decode_image(data: bytes, filename: str) -> DecodedImage:
    """A member's image upright and at most MAX_DERIVED_SIZE a side, or InvalidParams when it will not decode."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            # The header's size is checked before the pixels are decoded: a small file can claim a huge image.
            if image.width * image.height > MAX_IMAGE_PIXELS or image.format not in IMAGE_TYPES.values():
                raise InvalidParams(f"{filename} is not an image I can use: attach a PNG, JPEG or WebP.")
            # A JPEG decodes straight at a fraction of its size when that is all the bot keeps.
            image.draft("RGB", (MAX_DERIVED_SIZE, MAX_DERIVED_SIZE))
            upright = ImageOps.exif_transpose(image).convert("RGB")
    except InvalidParams:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        # ValueError: Pillow's "Decompressed Data Too Large" for a PNG text chunk past its limit.
        raise InvalidParams(f"{filename} could not be read as an image: attach a PNG, JPEG or WebP.") from None
    size = upright.size
    # No job draws over more than MAX_DERIVED_SIZE a side, and a smaller PNG is written well within the 3 s
    # Discord gives the answer.
    upright.thumbnail((MAX_DERIVED_SIZE, MAX_DERIVED_SIZE), Image.Resampling.LANCZOS, reducing_gap=3.0)
    buffer = io.BytesIO()
    upright.save(buffer, format="PNG", compress_level=1)
    return DecodedImage(png=buffer.getvalue(), size=size)


async def fetch_image(info: AttachmentInfo) -> DecodedImage:
    """Check, download with a cap and decode a member's image; InvalidParams with a sentence at any failure."""
    check_image(info)
    data = await download(info)
    return await asyncio.to_thread(decode_image, data, info.filename)


async def fetch_raw(info: AttachmentInfo) -> bytes:
    """Check and download an image as it is (its metadata intact), with a cap."""
    check_image(info)
    return await download(info)
