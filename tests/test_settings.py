from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.settings import DEFAULT_MODEL, SettingError, load_settings, read_environment
from core.source import SourceKind

TOKEN = "MTA1NjQ3ODk0NTYxMjM0NTY3OA.GabcDe.abcdefghijklmnopqrstuvwxyz0123456789AB"


def test_defaults(tmp_path: Path) -> None:
    settings = load_settings({"DISCORD_TOKEN": TOKEN}, cwd=tmp_path)
    assert settings.model.kind is SourceKind.HUB and settings.model.location == DEFAULT_MODEL
    assert settings.db_path == tmp_path / "sdbot.sqlite3"
    assert (str(settings.devices), settings.guild_ids, settings.log_level, settings.max_megapixels) == (
        "auto",
        (),
        "INFO",
        None,
    )


def test_every_setting_parsed(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    checkpoint = tmp_path / "models" / "deliberate_v2.safetensors"
    checkpoint.write_bytes(b"")
    settings = load_settings(
        {
            "DISCORD_TOKEN": TOKEN,
            "SDBOT_MODEL": "models/deliberate_v2.safetensors",
            "SDBOT_DB": "jobs.db",
            "SDBOT_DEVICE": "CUDA",
            "SDBOT_GUILD_IDS": "123, 456,",
            "SDBOT_LOG_LEVEL": "debug",
            "SDBOT_MAX_MEGAPIXELS": "2.5",
        },
        cwd=tmp_path,
    )
    assert settings.model.kind is SourceKind.FILE and settings.model.name == "deliberate_v2"
    assert settings.model.location == str(checkpoint)
    assert settings.db_path == tmp_path / "jobs.db"
    assert (str(settings.devices), settings.guild_ids, settings.log_level, settings.max_megapixels) == (
        "cuda",
        (123, 456),
        "DEBUG",
        2.5,
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DISCORD_TOKEN": " "}, "DISCORD_TOKEN is not set"),
        ({"DISCORD_TOKEN": "paste-your-token-here"}, "DISCORD_TOKEN does not look like a bot token"),
        ({"SDBOT_DEVICE": "gpu"}, "SDBOT_DEVICE takes auto, cpu, cuda, cuda:N or all (or a list such as"),
        ({"SDBOT_DEVICE": "cuda:0,cuda:0"}, "SDBOT_DEVICE names a GPU twice (cuda:0,cuda:0): each engine plans for"),
        ({"SDBOT_DEVICE": "all,cpu"}, "SDBOT_DEVICE takes all or none alone: every CUDA GPU, one engine each"),
        ({"SDBOT_DEVICE": "none"}, "SDBOT_DEVICE is none, so no engine runs here: set SDBOT_REDIS_URL for workers"),
        ({"SDBOT_REDIS_URL": "http://:secret@redis:6379"}, "SDBOT_REDIS_URL must be a Redis URL such as redis://"),
        ({"SDBOT_WORKER_NAME": "gpu box"}, "SDBOT_WORKER_NAME must be 1 to 64 letters, digits, dots, dashes"),
        ({"SDBOT_HEARTBEAT_S": "0.5"}, "SDBOT_HEARTBEAT_S must be between 1 and 3600 seconds, not 0.5"),
        ({"SDBOT_GUILD_IDS": "123,my-server"}, "SDBOT_GUILD_IDS must be comma-separated server ids"),
        ({"SDBOT_LOG_LEVEL": "loud"}, "SDBOT_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR"),
        ({"SDBOT_MAX_MEGAPIXELS": "-1"}, "SDBOT_MAX_MEGAPIXELS must be a positive number"),
        ({"SDBOT_MODEL": "models/missing.safetensors"}, "SDBOT_MODEL models/missing.safetensors does not exist"),
        ({"SDBOT_MODEL": "anything-v3.ckpt"}, "SDBOT_MODEL anything-v3.ckpt is a pickle checkpoint"),
        ({"SDBOT_DB": "no/such/folder/db.sqlite3"}, "SDBOT_DB must be a file in an existing folder"),
        ({"SDBOT_OWNER_IDS": "123, @me"}, "SDBOT_OWNER_IDS must be comma-separated user ids (numbers), but has '@me'"),
        ({"SDBOT_ALLOW_DMS": "yes"}, "SDBOT_ALLOW_DMS must be 1 (on) or 0 (off), not 'yes'"),
        ({"SDBOT_ALLOW_DMS": "1", "SDBOT_GUILD_IDS": "123"}, "SDBOT_ALLOW_DMS=1 needs SDBOT_GUILD_IDS empty"),
    ],
)
def test_bad_settings_name_the_variable(tmp_path: Path, env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingError) as caught:
        load_settings({"DISCORD_TOKEN": TOKEN, **env}, cwd=tmp_path)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_owners_and_dms(tmp_path: Path) -> None:
    defaults = load_settings({"DISCORD_TOKEN": TOKEN}, cwd=tmp_path)
    assert (defaults.owner_ids, defaults.allow_dms) == ((), False)
    settings = load_settings(
        {"DISCORD_TOKEN": TOKEN, "SDBOT_OWNER_IDS": "123, 456,", "SDBOT_ALLOW_DMS": "1"}, cwd=tmp_path
    )
    assert (settings.owner_ids, settings.allow_dms) == ((123, 456), True)


def test_folder_without_model_index_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SettingError, match="without model_index.json"):
        load_settings({"DISCORD_TOKEN": TOKEN, "SDBOT_MODEL": "empty"}, cwd=tmp_path)


def test_generate_needs_no_token(tmp_path: Path) -> None:
    assert load_settings({}, cwd=tmp_path, require_token=False).discord_token == ""


def test_dotenv_is_read_and_the_real_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("SDBOT_DEVICE=cpu\nSDBOT_LOG_LEVEL=DEBUG\n# a comment\n")
    monkeypatch.setenv("SDBOT_LOG_LEVEL", "WARNING")
    env = read_environment(tmp_path)
    assert env["SDBOT_DEVICE"] == "cpu"
    assert env["SDBOT_LOG_LEVEL"] == "WARNING"


@pytest.mark.parametrize("entry", [["-m", "bot"], ["-m", "bot", "run"]])
def test_bad_setting_exits_2_with_one_line_and_no_traceback(tmp_path: Path, entry: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SDBOT_", "DISCORD_"))}
    (tmp_path / ".env").write_text(f"DISCORD_TOKEN={TOKEN}\nSDBOT_DEVICE=tpu\n")
    done = subprocess.run([sys.executable, *entry], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr == (
        "sdbot: SDBOT_DEVICE takes auto, cpu, cuda, cuda:N or all (or a list such as cuda:0,cuda:1), not 'tpu'\n"
    )


def test_image_keeping_and_inpainting_settings(tmp_path: Path) -> None:
    (tmp_path / "inpainting").mkdir()
    (tmp_path / "inpainting" / "model_index.json").write_text("{}")
    settings = load_settings(
        {
            "DISCORD_TOKEN": TOKEN,
            "SDBOT_DATA_DIR": "kept/images",
            "SDBOT_KEEP_DAYS": "7.5",
            "SDBOT_INPAINT_MODEL": "inpainting",
        },
        cwd=tmp_path,
    )
    assert settings.data_dir == tmp_path / "kept" / "images" and settings.data_dir.is_dir()
    assert settings.keep_days == 7.5
    assert settings.inpaint_model is not None and settings.inpaint_model.kind is SourceKind.FOLDER
    defaults = load_settings({"DISCORD_TOKEN": TOKEN}, cwd=tmp_path)
    assert (defaults.data_dir, defaults.keep_days, defaults.inpaint_model) == (tmp_path / "data", 30.0, None)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SDBOT_KEEP_DAYS": "forever"}, "SDBOT_KEEP_DAYS must be a positive number such as 30"),
        (
            {"SDBOT_INPAINT_MODEL": "sd-inpainting.ckpt"},
            "SDBOT_INPAINT_MODEL sd-inpainting.ckpt is a pickle checkpoint",
        ),
    ],
)
def test_bad_image_settings_name_the_variable(tmp_path: Path, env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingError, match=f"^{message}"):
        load_settings({"DISCORD_TOKEN": TOKEN, **env}, cwd=tmp_path)


def test_an_unwritable_data_dir_names_the_setting(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(SettingError, match="^SDBOT_DATA_DIR must be a folder the bot can write"):
        load_settings({"DISCORD_TOKEN": TOKEN, "SDBOT_DATA_DIR": "file/data"}, cwd=tmp_path)


def test_lora_and_embedding_folders(tmp_path: Path) -> None:
    defaults = load_settings({"DISCORD_TOKEN": TOKEN}, cwd=tmp_path)
    # The default folders may be missing: then no LoRAs or embeddings are installed.
    assert (defaults.lora_dir, defaults.embeddings_dir) == (tmp_path / "loras", tmp_path / "embeddings")
    (tmp_path / "civitai" / "lora").mkdir(parents=True)
    (tmp_path / "embeddings.txt").write_text("")
    chosen = load_settings({"DISCORD_TOKEN": TOKEN, "SDBOT_LORA_DIR": "civitai/lora"}, cwd=tmp_path)
    assert chosen.lora_dir == tmp_path / "civitai" / "lora"
    with pytest.raises(SettingError, match=r"^SDBOT_LORA_DIR must be an existing folder, but .*/typo is not one$"):
        load_settings({"DISCORD_TOKEN": TOKEN, "SDBOT_LORA_DIR": "typo"}, cwd=tmp_path)
    with pytest.raises(SettingError, match="^SDBOT_EMBEDDINGS_DIR must be an existing folder"):
        load_settings({"DISCORD_TOKEN": TOKEN, "SDBOT_EMBEDDINGS_DIR": "embeddings.txt"}, cwd=tmp_path)


@pytest.mark.parametrize(("raw", "message"), [("0", "'0'"), ("five", "'five'"), ("-1", "'-1'")])
def test_max_loras_is_at_least_one(tmp_path: Path, raw: str, message: str) -> None:
    assert load_settings({"DISCORD_TOKEN": TOKEN}, cwd=tmp_path).max_loras == 5
    assert load_settings({"DISCORD_TOKEN": TOKEN, "SDBOT_MAX_LORAS": " 2 "}, cwd=tmp_path).max_loras == 2
    with pytest.raises(SettingError, match=f"^SDBOT_MAX_LORAS must be a whole number, 1 or more, not {message}$"):
        load_settings({"DISCORD_TOKEN": TOKEN, "SDBOT_MAX_LORAS": raw}, cwd=tmp_path)


def test_throughput_settings(tmp_path: Path) -> None:
    (tmp_path / "taesd").mkdir()
    env = {"DISCORD_TOKEN": TOKEN, "SDBOT_MAX_BATCH": "6", "SDBOT_COMPILE": "1", "SDBOT_PREVIEW_MODEL": "taesd"}
    settings = load_settings(env, cwd=tmp_path)
    assert (settings.max_batch, settings.compile, settings.preview_model) == (6, True, tmp_path / "taesd")
    defaults = load_settings({"DISCORD_TOKEN": TOKEN, "SDBOT_MAX_BATCH": "0"}, cwd=tmp_path)
    assert (defaults.max_batch, defaults.compile, defaults.preview_model) == (None, False, None)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SDBOT_MAX_BATCH": "9"}, "SDBOT_MAX_BATCH must be 1 to 8, or 0 to size it from GPU memory, not '9'"),
        ({"SDBOT_MAX_BATCH": "many"}, "SDBOT_MAX_BATCH must be 1 to 8"),
        ({"SDBOT_COMPILE": "maybe"}, "SDBOT_COMPILE must be 1 \\(on\\) or 0 \\(off\\), not 'maybe'"),
        (
            {"SDBOT_PREVIEW_MODEL": "taesd"},
            "SDBOT_PREVIEW_MODEL must be a local folder holding a tiny autoencoder \\(TAESD\\), but .*taesd is not",
        ),
    ],
)
def test_bad_throughput_settings_name_the_variable(tmp_path: Path, env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingError, match=f"^{message}"):
        load_settings({"DISCORD_TOKEN": TOKEN, **env}, cwd=tmp_path)


def test_workers_settings(tmp_path: Path) -> None:
    url = "rediss://:s3cret@redis.example:6380/2"
    env = {
        "SDBOT_DEVICE": "none",
        "SDBOT_REDIS_URL": url,
        "SDBOT_WORKER_NAME": "box-2.gpu_a",
        "SDBOT_HEARTBEAT_S": "30",
    }
    settings = load_settings({"DISCORD_TOKEN": TOKEN, **env}, cwd=tmp_path)
    assert (settings.devices.none, settings.redis_url, settings.worker_name, settings.heartbeat_ttl) == (
        True,
        url,
        "box-2.gpu_a",
        30.0,
    )
    defaults = load_settings({"DISCORD_TOKEN": TOKEN}, cwd=tmp_path)
    assert (defaults.redis_url, defaults.worker_name, defaults.heartbeat_ttl) == (None, None, 15.0)
    # A mistyped URL is named without its password.
    with pytest.raises(SettingError) as caught:
        load_settings({"DISCORD_TOKEN": TOKEN, "SDBOT_REDIS_URL": "redis//:s3cret@host"}, cwd=tmp_path)
    assert "s3cret" not in str(caught.value)
