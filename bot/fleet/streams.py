"""What the bot and its workers write to Redis: the keys, the stream entries, and each worker's card.

- `sdbot:worker:<name>`: the worker's card (JSON), with a time-to-live it renews: while it exists, the worker lives.
- `sdbot:batches:<name>`: the bot's batches, cancels and rescans for that worker, read by it alone.
- `sdbot:results`: every worker's results and failures, read by the bot's consumer group and acknowledged only once
  the job log has them, so a result survives the bot dying before it recorded it.
- `sdbot:progress`: steps and previews, capped: losing an old one costs nothing.

Entries carry the engine's own wire frames (core.wire), so a worker speaks to the bot as an engine process does.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from core.catalog import MAX_CHOICE_VALUE, CatalogEntry
from core.checkpoint_header import Family
from core.sidecar import SidecarError, check_defaults, defaults_data
from core.vae_files import VaeFamily
from core.wire import EngineReady, Message, WireError, read_message

PREFIX = "sdbot"
RESULTS = f"{PREFIX}:results"
PROGRESS = f"{PREFIX}:progress"
GROUP = "bot"
CONSUMER = "bot"
# Progress entries kept: a few seconds of every engine's steps; older ones are of no use to anyone.
PROGRESS_KEPT = 2000
# The largest entry the bot reads: a result's PNGs (a job of 8 images at 2048², well within) and its header.
MAX_RESULT_BYTES = 64 * 1024 * 1024
# Steps carry at most a small preview.
MAX_PROGRESS_BYTES = 2 * 1024 * 1024
MAX_CARD_BYTES = 256 * 1024


def worker_key(name: str) -> str:
    return f"{PREFIX}:worker:{name}"


def batches_key(name: str) -> str:
    return f"{PREFIX}:batches:{name}"


WORKER_KEYS = worker_key("*")


class Kind(str, Enum):
    """What an entry asks or tells."""

    BATCH = "batch"  # bot → worker: draw these jobs on engine N
    CANCEL = "cancel"  # bot → worker: stop a job between two steps
    RELOAD = "reload"  # bot → worker: rescan the models folder
    OUTCOME = "outcome"  # worker → bot: one job's result or failure
    CRASHED = "crashed"  # worker → bot: the engine died drawing a batch


class BadEntry(ValueError):
    """An entry the reader cannot use; the message says why, for the log."""


def read_frame(raw: bytes, limit: int) -> Message:
    """The wire message in an entry's frame; BadEntry when it is too large or garbled."""
    if len(raw) > limit:
        raise BadEntry(f"frame of {len(raw)} bytes is over the {limit} allowed")
    try:
        message = read_message(io.BytesIO(raw))
    except WireError as exc:
        raise BadEntry(str(exc)) from None
    if message is None:
        raise BadEntry("empty frame")
    return message


def text(fields: Mapping[bytes, bytes], name: str, limit: int = 200) -> str:
    """A short text field of an entry; BadEntry when it is missing or not short UTF-8."""
    raw = fields.get(name.encode())
    if raw is None or len(raw) > limit:
        raise BadEntry(f"no usable {name} field")
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise BadEntry(f"{name} field is not UTF-8") from None


def entry_size(fields: Mapping[bytes, bytes]) -> int:
    return sum(len(key) + len(value) for key, value in fields.items())


# Where a model only a worker has lives, as the bot's catalog names it (it never opens the path).
REMOTE_MODELS = Path("remote-models")


def model_data(entry: CatalogEntry) -> dict[str, Any]:
    """One model of a worker's folder, as its card tells the bot."""
    return {
        "name": entry.name,
        "family": entry.family.value,
        "native": entry.native,
        "pickle": entry.pickle,
        "defaults": defaults_data(entry.defaults),
        "vae": entry.vae,
    }


def model_entry(data: Any) -> CatalogEntry:
    """A worker's model as the bot's catalog keeps it; BadEntry for anything a sidecar could not say."""
    try:
        name = str(data["name"])
        if not 0 < len(name) <= MAX_CHOICE_VALUE or "/" in name:
            raise ValueError(f"model name {name[:80]!r}")
        defaults = check_defaults(dict(data.get("defaults", {})), f"model {name} of a worker")
        native = int(data["native"])
        if not 64 <= native <= 4096:
            raise ValueError(f"native size {native}")
        vae = str(data.get("vae", ""))
        if len(vae) > MAX_CHOICE_VALUE or "/" in vae:
            raise ValueError(f"VAE name {vae[:80]!r}")
        family = Family(data["family"])
        return CatalogEntry(name, REMOTE_MODELS / name, family, native, defaults, bool(data["pickle"]), vae)
    except (KeyError, TypeError, ValueError, SidecarError) as exc:
        raise BadEntry(f"unusable model in a worker card: {exc}") from None


def _names(values: Any) -> frozenset[str]:
    """LoRA, embedding or upscaler names as a card lists them."""
    if not isinstance(values, list) or not all(isinstance(value, str) and 0 < len(value) <= 200 for value in values):
        raise ValueError("LoRA, embedding or upscaler names that are not short texts")
    return frozenset(values)


def _vaes(values: Any) -> dict[str, VaeFamily | None]:
    """VAE file names, each with the family its worker read from it (null: nothing in the file tells)."""
    if not isinstance(values, dict) or not all(isinstance(name, str) and 0 < len(name) <= 200 for name in values):
        raise ValueError("VAE names that are not short texts")
    return {name: None if family is None else VaeFamily(family) for name, family in values.items()}


@dataclass(frozen=True)
class WorkerCard:
    """What a worker announces with each heartbeat: who it is, its engines, its models, and how long it is
    trusted without a heartbeat."""

    name: str
    host: str
    engines: tuple[EngineReady, ...]
    ttl: float
    models: tuple[CatalogEntry, ...] = ()
    loras: frozenset[str] = frozenset()
    embeddings: frozenset[str] = frozenset()
    upscalers: frozenset[str] = frozenset()
    vaes: Mapping[str, VaeFamily | None] = field(default_factory=dict)  # its VAE folder's files, with their family

    @property
    def model_names(self) -> frozenset[str]:
        return frozenset(entry.name for entry in self.models)

    @property
    def vae_names(self) -> frozenset[str]:
        """Every VAE a job on this worker may name: its VAE folder's, and those beside its models."""
        return frozenset(self.vaes) | {entry.vae for entry in self.models if entry.vae}

    def to_json(self) -> str:
        return json.dumps(
            {
                "name": self.name,
                "host": self.host,
                "ttl": self.ttl,
                "engines": [ready.to_header()[0] for ready in self.engines],
                "models": [model_data(entry) for entry in self.models],
                "loras": sorted(self.loras),
                "embeddings": sorted(self.embeddings),
                "upscalers": sorted(self.upscalers),
                "vaes": {name: None if family is None else family.value for name, family in sorted(self.vaes.items())},
            }
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> WorkerCard:
        """The card as written by `to_json`; BadEntry for anything else."""
        if len(raw) > MAX_CARD_BYTES:
            raise BadEntry(f"worker card of {len(raw)} bytes")
        try:
            data: Any = json.loads(raw)
            engines = tuple(EngineReady.from_header(header, []) for header in data["engines"])
            card = cls(
                name=str(data["name"]),
                host=str(data["host"]),
                engines=engines,
                ttl=float(data["ttl"]),
                models=tuple(model_entry(model) for model in data.get("models", [])),
                loras=_names(data.get("loras", [])),
                embeddings=_names(data.get("embeddings", [])),
                upscalers=_names(data.get("upscalers", [])),
                vaes=_vaes(data.get("vaes", {})),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise BadEntry(f"unreadable worker card: {exc!r}") from None
        if not card.engines or not card.ttl > 0:
            raise BadEntry("worker card without engines or time-to-live")
        return card


def outcome_fields(worker: str, batch: str, frame: bytes) -> dict[str, bytes]:
    return {"kind": Kind.OUTCOME.value.encode(), "worker": worker.encode(), "batch": batch.encode(), "frame": frame}


def crashed_fields(worker: str, batch: str, message: str, drawing: Sequence[str]) -> dict[str, bytes]:
    return {
        "kind": Kind.CRASHED.value.encode(),
        "worker": worker.encode(),
        "batch": batch.encode(),
        "message": message.encode()[:1000],
        "drawing": ",".join(drawing).encode(),
    }
