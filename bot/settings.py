"""Settings from the environment and `.env` (the real environment wins), checked once at start."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from dotenv import dotenv_values

from bot.limits.rules import Limits
from core.batching import MAX_BATCH_IMAGES
from core.catalog import Catalog, CatalogError, pickle_refusal, scan
from core.devices import Devices, InvalidDevices
from core.params import DEFAULT_MAX_LORAS
from core.source import InvalidSource, ModelSource, SourceKind, parse_source
from core.vae_files import VaeFolder

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
DEFAULT_KEEP_DAYS = 30.0
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# Three dot-separated base64url parts; catches a placeholder or a pasted client secret early.
_TOKEN = re.compile(r"^[\w-]{20,}\.[\w-]{4,}\.[\w-]{20,}$")
WORKER_NAME = re.compile(r"[\w.-]{1,64}", re.ASCII)


class SettingError(ValueError):
    """A missing or invalid setting; the message is one line naming the variable and what it should be."""


@dataclass(frozen=True)
class Listen:
    """Where the metrics are served."""

    host: str
    port: int


@dataclass(frozen=True)
class Settings:
    """Every setting of the bot, parsed and checked."""

    discord_token: str
    model: ModelSource
    db_path: Path
    devices: Devices
    guild_ids: tuple[int, ...]
    log_level: str
    max_megapixels: float | None
    data_dir: Path
    keep_days: float
    inpaint_model: ModelSource | None
    limits: Limits
    shutdown_grace: float
    lora_dir: Path
    embeddings_dir: Path
    upscalers_dir: Path = Path("upscalers")
    vae_dir: Path = Path("vae")
    models_dir: Path = Path("models")
    catalog: Catalog = field(default_factory=Catalog)
    model_cache: int = 2
    allow_pickle: bool = False
    max_batch: int | None = None  # None: the engine chooses from the device memory
    compile: bool = False
    preview_model: Path | None = None
    face_model: Path | None = None  # None: OpenCV's Haar cascade
    describe_model: Path | None = None  # None: /describe says how to install one
    safety_model: Path | None = None
    owner_ids: tuple[int, ...] = ()
    allow_dms: bool = False
    max_loras: int = DEFAULT_MAX_LORAS
    metrics: Listen | None = None
    redis_url: str | None = None  # None: no workers, only the local engines
    worker_name: str | None = None  # None: the host, its devices and a suffix unique to each start
    heartbeat_ttl: float = 15.0


def read_environment(cwd: Path) -> dict[str, str]:
    """`.env` in `cwd` overlaid by the real environment."""
    from_file = {k: v for k, v in dotenv_values(cwd / ".env").items() if v is not None}
    return {**from_file, **os.environ}


def _token(env: Mapping[str, str], required: bool) -> str:
    token = env.get("DISCORD_TOKEN", "").strip()
    if not required:
        return token
    if not token:
        raise SettingError(
            "DISCORD_TOKEN is not set: put your bot's token (Developer Portal → your app → Bot → Reset Token) in .env"
        )
    if not _TOKEN.match(token):
        raise SettingError(
            "DISCORD_TOKEN does not look like a bot token: copy it from Developer Portal → your app → Bot"
            " (three parts separated by dots), not the client secret or public key"
        )
    return token


def _ids(env: Mapping[str, str], name: str, what: str) -> tuple[int, ...]:
    """Comma-separated Discord ids (of servers or users)."""
    ids = []
    for part in (p.strip() for p in env.get(name, "").split(",")):
        if not part:
            continue
        if not part.isdigit():
            raise SettingError(f"{name} must be comma-separated {what} ids (numbers), but has {part!r}")
        ids.append(int(part))
    return tuple(ids)


def _allow_dms(env: Mapping[str, str], guild_ids: tuple[int, ...]) -> bool:
    allow = _flag(env, "SDBOT_ALLOW_DMS")
    if allow and guild_ids:
        raise SettingError(
            "SDBOT_ALLOW_DMS=1 needs SDBOT_GUILD_IDS empty: Discord never offers commands synced to servers in DMs"
        )
    return allow


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...], upper: bool = False) -> str:
    value = env.get(name, "").strip() or default
    value = value.upper() if upper else value.lower()
    if value not in choices:
        raise SettingError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    return value


def _metrics(env: Mapping[str, str]) -> Listen | None:
    """SDBOT_METRICS_PORT: off when empty; a port (on 127.0.0.1) or host:port."""
    value = env.get("SDBOT_METRICS_PORT", "").strip()
    if not value:
        return None
    host, _, port = value.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise SettingError(
            f"SDBOT_METRICS_PORT must be a port (1 to 65535) or host:port such as 0.0.0.0:9108, not {value!r}"
        )
    return Listen(host, int(port))


REDIS_SCHEMES = ("redis", "rediss", "unix")


def _redis_url(env: Mapping[str, str]) -> str | None:
    """A Redis URL (`redis://:password@host:6379/0`, `rediss://…` for TLS, `unix:///path`), or None when unset."""
    value = env.get("SDBOT_REDIS_URL", "").strip()
    if not value:
        return None
    parts = urlsplit(value)
    if parts.scheme not in REDIS_SCHEMES or not (parts.hostname or parts.path):
        raise SettingError(
            "SDBOT_REDIS_URL must be a Redis URL such as redis://:password@host:6379/0 (rediss:// for TLS), not"
            f" {value.split('@')[-1]!r}"
        )
    return value


def _worker_name(env: Mapping[str, str]) -> str | None:
    value = env.get("SDBOT_WORKER_NAME", "").strip()
    if value and not WORKER_NAME.fullmatch(value):
        raise SettingError(
            f"SDBOT_WORKER_NAME must be 1 to 64 letters, digits, dots, dashes or underscores, not {value[:80]!r}"
        )
    return value or None


def _heartbeat(env: Mapping[str, str]) -> float:
    value = _seconds(env, "SDBOT_HEARTBEAT_S", 15.0)
    if not 1 <= value <= 3600:
        raise SettingError(f"SDBOT_HEARTBEAT_S must be between 1 and 3600 seconds, not {value:g}")
    return value


def _devices(env: Mapping[str, str]) -> Devices:
    try:
        return Devices.parse(env.get("SDBOT_DEVICE", "").strip() or "auto")
    except InvalidDevices as exc:
        raise SettingError(f"SDBOT_DEVICE {exc}") from None


def _source(name: str, value: str, cwd: Path, allow_pickle: bool = False) -> ModelSource:
    try:
        return parse_source(value, base=cwd, allow_pickle=allow_pickle)
    except InvalidSource as exc:
        raise SettingError(f"{name} {exc}") from None


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip()
    if raw not in ("", "0", "1"):
        raise SettingError(f"{name} must be 1 (on) or 0 (off), not {raw!r}")
    return raw == "1"


def _catalog(folder: Path, vaes: VaeFolder) -> Catalog:
    try:
        return scan(folder, vaes)
    except CatalogError as exc:
        raise SettingError(f"SDBOT_MODELS_DIR: {exc}") from None


def _model(value: str, catalog: Catalog, cwd: Path, allow_pickle: bool) -> ModelSource:
    """SDBOT_MODEL: a model of the folder by its name, else a folder, a file or a hub id as before."""
    entry = catalog.get(value)
    if entry is None or (cwd / value).exists():
        return _source("SDBOT_MODEL", value, cwd, allow_pickle)
    if entry.pickle and not allow_pickle:
        raise SettingError(f"SDBOT_MODEL: {pickle_refusal(entry.name)}")
    return ModelSource(SourceKind.FOLDER if entry.is_folder else SourceKind.FILE, str(entry.path))


def _path(env: Mapping[str, str], name: str, default: str, cwd: Path) -> Path:
    path = Path(env.get(name, "").strip() or default).expanduser()
    return path if path.is_absolute() else cwd / path


def _data_dir(env: Mapping[str, str], cwd: Path) -> Path:
    path = _path(env, "SDBOT_DATA_DIR", "./data", cwd)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SettingError(f"SDBOT_DATA_DIR must be a folder the bot can write, but {path}: {exc.strerror}") from None
    return path


def _folder(env: Mapping[str, str], name: str, default: str, cwd: Path) -> Path:
    """A folder of files the engine reads; the default may be missing (none installed), a folder set must exist."""
    path = _path(env, name, default, cwd)
    if path.is_dir() or (not env.get(name, "").strip() and not path.exists()):
        return path
    raise SettingError(f"{name} must be an existing folder, but {path} is not one")


def _count(env: Mapping[str, str], name: str, default: int) -> int | None:
    """A whole number of at least 0, where 0 lifts the limit (None)."""
    raw = env.get(name, "").strip()
    if not raw:
        return default or None
    if not raw.isdigit():
        raise SettingError(f"{name} must be a whole number (0 for no limit), not {raw!r}")
    return int(raw) or None


def _whole(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit():
        raise SettingError(f"{name} must be a whole number, 0 or more, not {raw!r}")
    return int(raw)


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise SettingError(f"{name} must be a number of seconds, 0 or more, not {raw!r}")
    return value


def _positive(env: Mapping[str, str], name: str, example: str) -> float | None:
    """A positive number, or None when the variable is empty."""
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise SettingError(f"{name} must be a positive number such as {example}, or empty, not {raw!r}")
    return value


def _max_batch(env: Mapping[str, str]) -> int | None:
    raw = env.get("SDBOT_MAX_BATCH", "").strip()
    if raw in ("", "0"):
        return None
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_BATCH_IMAGES:
        raise SettingError(
            f"SDBOT_MAX_BATCH must be 1 to {MAX_BATCH_IMAGES}, or 0 to size it from GPU memory, not {raw!r}"
        )
    return int(raw)


def _max_loras(env: Mapping[str, str]) -> int:
    raw = env.get("SDBOT_MAX_LORAS", "").strip()
    if not raw:
        return DEFAULT_MAX_LORAS
    if not raw.isdigit() or int(raw) < 1:
        raise SettingError(f"SDBOT_MAX_LORAS must be a whole number, 1 or more, not {raw!r}")
    return int(raw)


def _optional_file(env: Mapping[str, str], name: str, cwd: Path, holding: str) -> Path | None:
    """An optional local file that must exist when set."""
    if not env.get(name, "").strip():
        return None
    path = _path(env, name, "", cwd)
    if not path.is_file():
        raise SettingError(f"{name} must be a local file holding {holding}, but {path} is not a file")
    return path


def _optional_folder(env: Mapping[str, str], name: str, cwd: Path, holding: str) -> Path | None:
    """An optional local folder that must exist when set; never a hub id, so nothing is downloaded."""
    if not env.get(name, "").strip():
        return None
    path = _path(env, name, "", cwd)
    if not path.is_dir():
        raise SettingError(f"{name} must be a local folder holding {holding}, but {path} is not a folder")
    return path


def load_settings(env: Mapping[str, str], *, cwd: Path, require_token: bool = True) -> Settings:
    """Parse and check every setting; raise SettingError naming the first one at fault."""
    allow_pickle = _flag(env, "SDBOT_ALLOW_PICKLE")
    models_dir = _path(env, "SDBOT_MODELS_DIR", "./models", cwd)
    vae_dir = _folder(env, "SDBOT_VAE_DIR", "./vae", cwd)
    catalog = _catalog(models_dir, VaeFolder(vae_dir))
    model = _model(env.get("SDBOT_MODEL", "").strip() or DEFAULT_MODEL, catalog, cwd, allow_pickle)
    model_cache = _whole(env, "SDBOT_MODEL_CACHE", 2)
    inpaint = env.get("SDBOT_INPAINT_MODEL", "").strip()
    db_path = _path(env, "SDBOT_DB", "./sdbot.sqlite3", cwd)
    if not db_path.parent.is_dir():
        raise SettingError(f"SDBOT_DB must be a file in an existing folder, but {db_path.parent} does not exist")
    guild_ids = _ids(env, "SDBOT_GUILD_IDS", "server")
    devices = _devices(env)
    redis_url = _redis_url(env)
    if devices.none and redis_url is None:
        raise SettingError("SDBOT_DEVICE is none, so no engine runs here: set SDBOT_REDIS_URL for workers to draw")
    return Settings(
        discord_token=_token(env, require_token),
        model=model,
        db_path=db_path,
        devices=devices,
        guild_ids=guild_ids,
        log_level=_choice(env, "SDBOT_LOG_LEVEL", "INFO", LOG_LEVELS, upper=True),
        max_megapixels=_positive(env, "SDBOT_MAX_MEGAPIXELS", "2.5"),
        data_dir=_data_dir(env, cwd),
        keep_days=_positive(env, "SDBOT_KEEP_DAYS", "30") or DEFAULT_KEEP_DAYS,
        inpaint_model=_source("SDBOT_INPAINT_MODEL", inpaint, cwd) if inpaint else None,
        limits=Limits(
            images_per_hour=_count(env, "SDBOT_IMAGES_PER_HOUR", 60),
            images_per_day=_count(env, "SDBOT_IMAGES_PER_DAY", 400),
            max_queued=_count(env, "SDBOT_MAX_QUEUED_PER_USER", 3),
            cooldown_s=_seconds(env, "SDBOT_COOLDOWN_S", 5.0),
        ),
        shutdown_grace=_seconds(env, "SDBOT_SHUTDOWN_GRACE_S", 30.0),
        lora_dir=_folder(env, "SDBOT_LORA_DIR", "./loras", cwd),
        embeddings_dir=_folder(env, "SDBOT_EMBEDDINGS_DIR", "./embeddings", cwd),
        upscalers_dir=_folder(env, "SDBOT_UPSCALERS_DIR", "./upscalers", cwd),
        vae_dir=vae_dir,
        models_dir=models_dir,
        catalog=catalog,
        model_cache=model_cache,
        allow_pickle=allow_pickle,
        max_batch=_max_batch(env),
        compile=_flag(env, "SDBOT_COMPILE"),
        preview_model=_optional_folder(env, "SDBOT_PREVIEW_MODEL", cwd, "a tiny autoencoder (TAESD)"),
        safety_model=_optional_folder(env, "SDBOT_SAFETY_MODEL", cwd, "a Stable Diffusion safety checker"),
        face_model=_optional_file(env, "SDBOT_FACE_MODEL", cwd, "a YuNet or YOLOv8 face detector (.onnx)"),
        describe_model=_optional_folder(env, "SDBOT_DESCRIBE_MODEL", cwd, "a BLIP captioning model or a WD14 tagger"),
        owner_ids=_ids(env, "SDBOT_OWNER_IDS", "user"),
        allow_dms=_allow_dms(env, guild_ids),
        max_loras=_max_loras(env),
        metrics=_metrics(env),
        redis_url=redis_url,
        worker_name=_worker_name(env),
        heartbeat_ttl=_heartbeat(env),
    )


def configure_logging(level: str) -> None:
    """One line per record on stderr (the journal adds its own timestamps under systemd)."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
