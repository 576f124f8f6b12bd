"""Bot ↔ engine messages and their framing: plain JSON headers plus raw image bytes (no torch).

Nothing here is pickled or shared-memory, so the same messages can later travel over a broker.
A frame is a 4-byte big-endian header length, the UTF-8 JSON header, then the blobs it lists.
"""

from __future__ import annotations

import asyncio
import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO, ClassVar

from core.infotext import ModelInfo
from core.params import GenerationParams

_LENGTH = struct.Struct(">I")
MAX_HEADER_BYTES = 16 * 1024 * 1024
# The blobs of one frame: a batch's source images or a job's PNGs come to tens of MiB at most.
MAX_BLOB_BYTES = 512 * 1024 * 1024


class WireError(RuntimeError):
    """The other side sent something that is not a frame of this protocol."""


# Field readers for from_header: each raises TypeError (a WireError once read) unless the value has its type, so a
# frame with a field of the wrong type is refused where it is read, not where the value is used much later.
def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, not {str(value)[:50]!r}")
    return value


def _whole(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"expected a whole number, not {str(value)[:50]!r}")
    return value


def _number(value: Any) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise TypeError(f"expected a finite number, not {str(value)[:50]!r}")
    return float(value)


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, not {str(value)[:50]!r}")
    return value


def _mapping(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, not {str(value)[:50]!r}")
    return value


def _model(value: Any) -> ModelInfo:
    model = _mapping(value)
    return ModelInfo(name=_text(model["name"]), hash=_text(model["hash"]))


@dataclass(frozen=True)
class GenerateRequest:
    """Bot → engine: draw the images of one job (from a source image, for the modes that need one)."""

    TYPE: ClassVar[str] = "generate"
    job_id: str
    params: GenerationParams
    source: bytes | None = None  # the image an img2img, upscale or outpaint job works from
    check_safety: bool = False  # run the safety checker (when the engine has one) and mark what it flags

    def to_header(self) -> tuple[dict[str, Any], list[bytes]]:
        blobs = [self.source] if self.source is not None else []
        return {"job_id": self.job_id, "params": self.params.to_dict(), "check_safety": self.check_safety}, blobs

    @classmethod
    def from_header(cls, header: dict[str, Any], blobs: list[bytes]) -> GenerateRequest:
        source = blobs[0] if blobs else None
        return cls(
            job_id=_text(header["job_id"]),
            params=GenerationParams.from_dict(_mapping(header["params"])),
            source=source,
            check_safety=_flag(header.get("check_safety", False)),
        )


@dataclass(frozen=True)
class GenerateBatch:
    """Bot → engine: jobs to denoise together (one frame, so the engine never starts on half of them)."""

    TYPE: ClassVar[str] = "batch"
    requests: tuple[GenerateRequest, ...]

    def to_header(self) -> tuple[dict[str, Any], list[bytes]]:
        jobs, blobs = [], []
        for request in self.requests:
            header, sources = request.to_header()
            jobs.append({**header, "sources": len(sources)})
            blobs += sources
        return {"jobs": jobs}, blobs

    @classmethod
    def from_header(cls, header: dict[str, Any], blobs: list[bytes]) -> GenerateBatch:
        requests, rest = [], list(blobs)
        for job in header["jobs"]:
            sources = _whole(_mapping(job)["sources"])
            mine, rest = rest[:sources], rest[sources:]
            requests.append(GenerateRequest.from_header(job, mine))
        return cls(requests=tuple(requests))


@dataclass(frozen=True)
class CancelRequest:
    """Bot → engine: stop a job between two steps (or drop it if it has not started)."""

    TYPE: ClassVar[str] = "cancel"
    job_id: str

    def to_header(self) -> tuple[dict[str, Any], list[bytes]]:
        return {"job_id": self.job_id}, []

    @classmethod
    def from_header(cls, header: dict[str, Any], blobs: list[bytes]) -> CancelRequest:
        return cls(job_id=_text(header["job_id"]))


@dataclass(frozen=True)
class ReloadModels:
    """Bot → engine: rescan SDBOT_MODELS_DIR before the next job (models already loaded stay loaded)."""

    TYPE: ClassVar[str] = "reload_models"

    def to_header(self) -> tuple[dict[str, Any], list[bytes]]:
        return {}, []

    @classmethod
    def from_header(cls, header: dict[str, Any], blobs: list[bytes]) -> ReloadModels:
        return cls()


@dataclass(frozen=True)
class EngineReady:
    """Engine → bot: the model is loaded; what it can draw."""

    TYPE: ClassVar[str] = "ready"
    model: ModelInfo
    device: str
    native_width: int
    native_height: int
    max_pixels: int  # with the default model on the device
    max_batch: int = 1  # images one denoising loop may hold, across jobs
    safety_checker: bool = False  # whether SDBOT_SAFETY_MODEL is loaded
    family_pixels: Mapping[str, int] = field(default_factory=dict)  # the same with a model of each family

    def pixels_for(self, family: str | None) -> int:
        """The pixels one job or batch may draw with a model of `family` (None: the default model)."""
        return self.family_pixels.get(family, self.max_pixels) if family is not None else self.max_pixels

    def to_header(self) -> tuple[dict[str, Any], list[bytes]]:
        return {
            "model": {"name": self.model.name, "hash": self.model.hash},
            "device": self.device,
            "native_width": self.native_width,
            "native_height": self.native_height,
            "max_pixels": self.max_pixels,
            "max_batch": self.max_batch,
            "safety_checker": self.safety_checker,
            "family_pixels": dict(self.family_pixels),
        }, []

    @classmethod
    def from_header(cls, header: dict[str, Any], blobs: list[bytes]) -> EngineReady:
        family_pixels = _mapping(header.get("family_pixels", {}))
        return cls(
            model=_model(header["model"]),
            device=_text(header["device"]),
            native_width=_whole(header["native_width"]),
            native_height=_whole(header["native_height"]),
            max_pixels=_whole(header["max_pixels"]),
            max_batch=_whole(header.get("max_batch", 1)),
            safety_checker=_flag(header.get("safety_checker", False)),
            family_pixels={_text(family): _whole(pixels) for family, pixels in family_pixels.items()},
        )


@dataclass(frozen=True)
class Progress:
    """Engine → bot: `step` of `total` denoising steps of a job are done, with now and then a small preview."""

    TYPE: ClassVar[str] = "progress"
    job_id: str
    step: int
    total: int
    preview: bytes | None = None  # a small WebP of the job's first image as it stands

    def to_header(self) -> tuple[dict[str, Any], list[bytes]]:
        blobs = [self.preview] if self.preview is not None else []
        return {"job_id": self.job_id, "step": self.step, "total": self.total}, blobs

    @classmethod
    def from_header(cls, header: dict[str, Any], blobs: list[bytes]) -> Progress:
        preview = blobs[0] if blobs else None
        return cls(
            job_id=_text(header["job_id"]), step=_whole(header["step"]), total=_whole(header["total"]), preview=preview
        )


@dataclass(frozen=True)
class GeneratedImage:
    """One finished image: its seed, its infotext, the PNG that carries it, and whether the safety checker
    flagged it."""

    seed: int
    infotext: str
    png: bytes
    flagged: bool = False


@dataclass(frozen=True)
class JobResult:
    """Engine → bot: a job's images in seed order, the seconds the engine spent, and the model that drew them."""

    TYPE: ClassVar[str] = "result"
    job_id: str
    images: tuple[GeneratedImage, ...]
    seconds: float
    model: ModelInfo

    def to_header(self) -> tuple[dict[str, Any], list[bytes]]:
        header = {
            "job_id": self.job_id,
            "seconds": self.seconds,
            "model": {"name": self.model.name, "hash": self.model.hash},
            "images": [{"seed": i.seed, "infotext": i.infotext, "flagged": i.flagged} for i in self.images],
        }
        return header, [i.png for i in self.images]

    @classmethod
    def from_header(cls, header: dict[str, Any], blobs: list[bytes]) -> JobResult:
        images = tuple(
            GeneratedImage(
                seed=_whole(meta["seed"]),
                infotext=_text(meta["infotext"]),
                png=png,
                flagged=_flag(meta.get("flagged", False)),
            )
            for meta, png in zip(map(_mapping, header["images"]), blobs, strict=True)
        )
        return cls(
            job_id=_text(header["job_id"]),
            images=images,
            seconds=_number(header["seconds"]),
            model=_model(header["model"]),
        )


@dataclass(frozen=True)
class JobFailed:
    """Engine → bot: a job could not be drawn; `message` is a sentence for the member."""

    TYPE: ClassVar[str] = "failed"
    job_id: str
    message: str

    def to_header(self) -> tuple[dict[str, Any], list[bytes]]:
        return {"job_id": self.job_id, "message": self.message}, []

    @classmethod
    def from_header(cls, header: dict[str, Any], blobs: list[bytes]) -> JobFailed:
        return cls(job_id=_text(header["job_id"]), message=_text(header["message"]))


@dataclass(frozen=True)
class EngineStarting:
    """Engine → bot, before EngineReady: what it starts on now; each stage (loading, each compile) may take
    minutes, and hearing of it tells the bot (and systemd) the engine is still alive."""

    TYPE: ClassVar[str] = "starting"
    stage: str

    def to_header(self) -> tuple[dict[str, Any], list[bytes]]:
        return {"stage": self.stage}, []

    @classmethod
    def from_header(cls, header: dict[str, Any], blobs: list[bytes]) -> EngineStarting:
        return cls(stage=_text(header["stage"]))


@dataclass(frozen=True)
class EngineFatal:
    """Engine → bot: the engine cannot start; `message` is one line for the operator."""

    TYPE: ClassVar[str] = "fatal"
    message: str

    def to_header(self) -> tuple[dict[str, Any], list[bytes]]:
        return {"message": self.message}, []

    @classmethod
    def from_header(cls, header: dict[str, Any], blobs: list[bytes]) -> EngineFatal:
        return cls(message=_text(header["message"]))


Message = (
    GenerateRequest
    | GenerateBatch
    | CancelRequest
    | ReloadModels
    | EngineStarting
    | EngineReady
    | Progress
    | JobResult
    | JobFailed
    | EngineFatal
)
_TYPES: dict[str, Any] = {
    cls.TYPE: cls
    for cls in (
        GenerateRequest,
        GenerateBatch,
        CancelRequest,
        ReloadModels,
        EngineStarting,
        EngineReady,
        Progress,
        JobResult,
        JobFailed,
        EngineFatal,
    )
}


def encode(message: Message) -> bytes:
    """One frame holding `message`."""
    fields, blobs = message.to_header()
    header = json.dumps({"type": message.TYPE, "blobs": [len(b) for b in blobs], **fields}).encode()
    return b"".join([_LENGTH.pack(len(header)), header, *blobs])


def _parse_header(raw: bytes) -> tuple[dict[str, Any], list[int]]:
    """The header of a frame and the lengths of the blobs that follow it."""
    try:
        header = json.loads(raw)
    except ValueError as exc:
        raise WireError(f"frame header is not JSON: {exc}") from None
    if not isinstance(header, dict) or header.get("type") not in _TYPES:
        raise WireError(f"unknown message: {str(header)[:200]}")
    lengths = header.get("blobs")
    if (
        not isinstance(lengths, list)
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in lengths)
        or sum(lengths) > MAX_BLOB_BYTES
    ):
        raise WireError(f"{header['type']} frame with unusable blob lengths: {str(lengths)[:100]}")
    return header, lengths


def _build(header: dict[str, Any], blobs: list[bytes]) -> Message:
    try:
        return _TYPES[header["type"]].from_header(header, blobs)
    except (KeyError, TypeError, ValueError) as exc:
        raise WireError(f"malformed {header['type']} message: {exc!r}") from None


def _header_length(prefix: bytes) -> int:
    (length,) = _LENGTH.unpack(prefix)
    if length > MAX_HEADER_BYTES:
        raise WireError(f"frame header of {length} bytes is too large")
    return length


def read_message(stream: BinaryIO) -> Message | None:
    """Read one message from a blocking stream; None at a clean end of stream."""

    def exactly(n: int) -> bytes:
        data = stream.read(n)
        if len(data) != n:
            raise WireError(f"stream ended inside a frame ({len(data)} of {n} bytes)")
        return data

    prefix = stream.read(_LENGTH.size)
    if not prefix:
        return None
    if len(prefix) != _LENGTH.size:
        raise WireError("stream ended inside a frame length")
    header, lengths = _parse_header(exactly(_header_length(prefix)))
    return _build(header, [exactly(n) for n in lengths])


async def read_message_async(reader: asyncio.StreamReader) -> Message | None:
    """Read one message from an asyncio stream; None at a clean end of stream."""
    try:
        prefix = await reader.readexactly(_LENGTH.size)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise WireError("stream ended inside a frame length") from None
    try:
        header, lengths = _parse_header(await reader.readexactly(_header_length(prefix)))
        blobs = [await reader.readexactly(n) for n in lengths]
    except asyncio.IncompleteReadError as exc:
        raise WireError(f"stream ended inside a frame ({len(exc.partial)} bytes read)") from None
    return _build(header, blobs)
