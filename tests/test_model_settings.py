"""The model settings: SDBOT_MODELS_DIR, SDBOT_MODEL by catalog name, SDBOT_MODEL_CACHE, SDBOT_ALLOW_PICKLE."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.models.channel_defaults import ChannelModels
from bot.pipeline.database import Database
from bot.settings import SettingError, load_settings
from core.source import SourceKind
from tests.support.checkpoint_headers import SD1_KEYS, write_header_only
from tests.test_settings import TOKEN


@pytest.fixture
def models(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    write_header_only(folder / "deliberate_v2.safetensors", SD1_KEYS)
    (folder / "anything-v3.ckpt").write_bytes(b"")
    return folder


def test_defaults(tmp_path: Path, models: Path) -> None:
    settings = load_settings({"DISCORD_TOKEN": TOKEN}, cwd=tmp_path)
    assert settings.models_dir == models and settings.catalog.names() == ["anything-v3", "deliberate_v2"]
    assert (settings.model_cache, settings.allow_pickle) == (2, False)


def test_sdbot_model_may_be_a_name_from_the_folder(tmp_path: Path, models: Path) -> None:
    settings = load_settings({"DISCORD_TOKEN": TOKEN, "SDBOT_MODEL": "deliberate_v2"}, cwd=tmp_path)
    assert settings.model.kind is SourceKind.FILE
    assert settings.model.location == str(models / "deliberate_v2.safetensors")
    # A path or hub id still means what it meant before.
    by_path = load_settings({"DISCORD_TOKEN": TOKEN, "SDBOT_MODEL": "models/deliberate_v2.safetensors"}, cwd=tmp_path)
    assert by_path.model.location == str(models / "deliberate_v2.safetensors")
    hub = load_settings({"DISCORD_TOKEN": TOKEN, "SDBOT_MODEL": "prompthero/openjourney-v4"}, cwd=tmp_path)
    assert hub.model.kind is SourceKind.HUB


def test_pickles_need_the_flag(tmp_path: Path, models: Path) -> None:
    with pytest.raises(SettingError, match=r"^SDBOT_MODEL: The model anything-v3 is a pickle checkpoint"):
        load_settings({"DISCORD_TOKEN": TOKEN, "SDBOT_MODEL": "anything-v3"}, cwd=tmp_path)
    allowed = load_settings(
        {"DISCORD_TOKEN": TOKEN, "SDBOT_MODEL": "anything-v3", "SDBOT_ALLOW_PICKLE": "1"}, cwd=tmp_path
    )
    assert allowed.allow_pickle and allowed.model.location == str(models / "anything-v3.ckpt")
    by_path = load_settings(
        {"DISCORD_TOKEN": TOKEN, "SDBOT_MODEL": "models/anything-v3.ckpt", "SDBOT_ALLOW_PICKLE": "1"}, cwd=tmp_path
    )
    assert by_path.model.kind is SourceKind.FILE


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SDBOT_MODEL_CACHE": "-1"}, "SDBOT_MODEL_CACHE must be a whole number, 0 or more, not '-1'"),
        ({"SDBOT_ALLOW_PICKLE": "yes"}, "SDBOT_ALLOW_PICKLE must be 1 (on) or 0 (off), not 'yes'"),
    ],
)
def test_bad_model_settings_name_the_variable(tmp_path: Path, env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingError) as caught:
        load_settings({"DISCORD_TOKEN": TOKEN, **env}, cwd=tmp_path)
    assert str(caught.value) == message


def test_a_bad_sidecar_stops_the_bot_with_one_line(tmp_path: Path, models: Path) -> None:
    (models / "deliberate_v2.toml").write_text('sampler = "k_lms"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SDBOT_", "DISCORD_"))}
    (tmp_path / ".env").write_text(f"DISCORD_TOKEN={TOKEN}\n")
    done = subprocess.run(
        [sys.executable, "-m", "bot"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr.startswith(f"sdbot: SDBOT_MODELS_DIR: {models / 'deliberate_v2.toml'}: sampler must be one of")
    assert done.stderr.count("\n") == 1


async def test_channel_defaults_survive_a_restart(tmp_path: Path) -> None:
    database = Database(tmp_path / "sdbot.sqlite3")
    await database.open()
    channels = ChannelModels(database)
    await channels.load()
    await channels.set(1, 10, "deliberate_v2")
    await channels.set(1, 11, "sd_xl_base_1.0")
    await channels.set(2, 20, "other")
    await channels.set(1, 11, None)
    await database.close()
    await database.open()
    again = ChannelModels(database)
    await again.load()
    assert (again.get(10), again.get(11), again.get(None)) == ("deliberate_v2", None, None)
    assert again.in_guild(1) == {10: "deliberate_v2"} and again.in_guild(2) == {20: "other"}
    await database.close()
