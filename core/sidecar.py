"""Per-model defaults from an optional `<name>.json` or `<name>.toml` beside a checkpoint (no torch)."""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import first_line
from core.params import (
    MAX_CFG,
    MAX_HIRES_STRENGTH,
    MAX_PROMPT_CHARS,
    MAX_SIZE,
    MAX_STEPS,
    MAX_UPSCALER_NAME,
    MIN_CFG,
    MIN_HIRES_STRENGTH,
    MIN_SIZE,
    MIN_STEPS,
    SAMPLERS,
    SIZE_MULTIPLE,
)

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

MAX_CLIP_SKIP = 12
MAX_DESCRIPTION_CHARS = 100  # what Discord shows of an autocomplete choice
PREDICTIONS = ("v", "epsilon")


class SidecarError(ValueError):
    """A sidecar the owner must fix; the message is one line naming the file and the key."""


@dataclass(frozen=True)
class ModelDefaults:
    """What a model's sidecar sets; None where it sets nothing (the bot's own default applies)."""

    width: int | None = None
    height: int | None = None
    steps: int | None = None
    cfg: float | None = None
    sampler: str | None = None
    clip_skip: int | None = None
    negative_prompt: str | None = None
    description: str = ""
    prediction: str | None = None  # SD 2.x only: "v" (768-v) or "epsilon" (512-base), when the header cannot tell
    # A hires fix's second pass on this model, when a member asks for one.
    hires_strength: float | None = None
    hires_steps: int | None = None
    hires_upscaler: str | None = None
    vae: str | None = None  # a file in SDBOT_VAE_DIR, as A1111's VAE list names it


def _whole(path: Path | str, key: str, value: Any, low: int, high: int, multiple: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high or value % multiple:
        also = f", a multiple of {multiple}" if multiple > 1 else ""
        raise SidecarError(f"{path}: {key} must be a whole number from {low} to {high}{also}, not {value!r}")
    return value


def _number(path: Path | str, key: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise SidecarError(f"{path}: {key} must be a number from {low:g} to {high:g}, not {value!r}")
    return float(value)


def _text(path: Path | str, key: str, value: Any, longest: int) -> str:
    if not isinstance(value, str) or len(value) > longest or (key == "description" and "\n" in value):
        raise SidecarError(f"{path}: {key} must be one line of text of at most {longest} characters")
    return value.strip()


def _choice(path: Path | str, key: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise SidecarError(f"{path}: {key} must be one of {', '.join(choices)}, not {value!r}")
    return str(value)


def _parse(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SidecarError(f"{path}: cannot be read ({exc})") from None
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise SidecarError(f"{path}: not valid {path.suffix[1:].upper()} ({first_line(exc)})") from None
    if not isinstance(data, dict):
        raise SidecarError(f'{path}: must hold an object of settings, such as {{"steps": 25}}')
    return data


def read_sidecar(path: Path) -> ModelDefaults:
    """Parse and check one sidecar; SidecarError names the file and the first key at fault."""
    return check_defaults(_parse(path), path)


def defaults_data(defaults: ModelDefaults) -> dict[str, Any]:
    """What a sidecar would hold to give these defaults (as a worker reports them to the bot)."""
    return {key: value for key, value in dataclasses.asdict(defaults).items() if value not in (None, "")}


def check_defaults(data: dict[str, Any], path: Path | str) -> ModelDefaults:
    """Check a sidecar's settings as read (`path` names where they came from); SidecarError names the first key at
    fault."""
    known = {f.name for f in dataclasses.fields(ModelDefaults)}
    unknown = sorted(set(map(str, data)) - known)
    if unknown:
        raise SidecarError(f"{path}: unknown key {unknown[0]!r}; the keys are {', '.join(sorted(known))}")
    values: dict[str, Any] = {}
    for key in ("width", "height"):
        if key in data:
            values[key] = _whole(path, key, data[key], MIN_SIZE, MAX_SIZE, SIZE_MULTIPLE)
    if "steps" in data:
        values["steps"] = _whole(path, "steps", data["steps"], MIN_STEPS, MAX_STEPS)
    if "cfg" in data:
        values["cfg"] = _number(path, "cfg", data["cfg"], MIN_CFG, MAX_CFG)
    if "sampler" in data:
        values["sampler"] = _choice(path, "sampler", data["sampler"], SAMPLERS)
    if "clip_skip" in data:
        values["clip_skip"] = _whole(path, "clip_skip", data["clip_skip"], 1, MAX_CLIP_SKIP)
    if "negative_prompt" in data:
        values["negative_prompt"] = _text(path, "negative_prompt", data["negative_prompt"], MAX_PROMPT_CHARS)
    if "description" in data:
        values["description"] = _text(path, "description", data["description"], MAX_DESCRIPTION_CHARS)
    if "prediction" in data:
        values["prediction"] = _choice(path, "prediction", data["prediction"], PREDICTIONS)
    if "vae" in data:
        values["vae"] = _text(path, "vae", data["vae"], MAX_UPSCALER_NAME)
    if "hires_strength" in data:
        strength = data["hires_strength"]
        values["hires_strength"] = _number(path, "hires_strength", strength, MIN_HIRES_STRENGTH, MAX_HIRES_STRENGTH)
    if "hires_steps" in data:
        values["hires_steps"] = _whole(path, "hires_steps", data["hires_steps"], MIN_STEPS, MAX_STEPS)
    if "hires_upscaler" in data:
        # Any name: the engines' upscaler folders are checked when a job uses it.
        values["hires_upscaler"] = _text(path, "hires_upscaler", data["hires_upscaler"], MAX_UPSCALER_NAME)
    return ModelDefaults(**values)


def sidecar_for(model: Path) -> Path | None:
    """The sidecar of a checkpoint file or diffusers folder: `<name>.json`/`.toml` beside it, or `sdbot.json`/`.toml`
    inside the folder."""
    stem = model.name if model.is_dir() else model.stem
    candidates = [model.parent / f"{stem}.json", model.parent / f"{stem}.toml"]
    if model.is_dir():
        candidates += [model / "sdbot.json", model / "sdbot.toml"]
    found = [c for c in candidates if c.is_file()]
    if len(found) > 1:
        raise SidecarError(f"{found[1]}: {model.name} already has the sidecar {found[0].name}; keep only one")
    return found[0] if found else None
