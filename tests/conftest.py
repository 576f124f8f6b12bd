"""Shared pytest set-up: every test runs offline; the tiny model is built once per session (per xdist worker)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bot.app import SdBot
from tests.support.bots import make_bot
from tests.support.fake_discord import FakeDiscord
from tests.support.fake_engine import FakeEngine
from tests.support.redis_server import RedisServer

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_VERBOSITY"] = "error"
if workers := int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0")):
    # Torch takes a thread per core in every worker and every engine process it starts; on a small machine
    # they then spin against each other, and a step takes many times as long. Each worker gets its share.
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight diffusers folder, saved once and loaded through the real loading code."""
    from tests.support.tiny_model import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny-sd")


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    """A fresh fake Discord that the real client is pointed at; it must end with no unexpected request."""
    async with FakeDiscord() as fake:
        yield fake
        fake.assert_clean()


@pytest.fixture
def engine() -> FakeEngine:
    """An in-process engine whose timing the test controls."""
    return FakeEngine()


@pytest.fixture
async def bot(fake: FakeDiscord, engine: FakeEngine, tmp_path: Path) -> AsyncIterator[SdBot]:
    """The real bot, connected to the fake Discord, with no limits."""
    client = make_bot(tmp_path, engine)
    async with fake.connected(client):
        yield client


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server of its own, stopped after the test."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()
