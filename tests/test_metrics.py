"""Prometheus metrics (SDBOT_METRICS_PORT): the real bot serves them over HTTP, scraped and parsed as Prometheus
would, after jobs that were drawn and one that failed."""

from __future__ import annotations

import asyncio
import socket
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.metrics import MetricsUnavailable
from bot.pipeline.engine_stats import Ending, EngineStatus
from bot.pipeline.engines import Engines
from bot.settings import Listen, SettingError, load_settings
from tests.support.bots import make_bot, results
from tests.support.fake_discord import USER_ID, FakeDiscord
from tests.support.fake_engine import FakeEngine

TOKEN = "MTA1NjQ3ODk0NTYxMjM0NTY3OA.GabcDe.abcdefghijklmnopqrstuvwxyz0123456789AB"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(port: int) -> Samples:
    """Every sample at /metrics, by name and labels."""

    def fetch() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            return str(response.read().decode())

    text = await asyncio.to_thread(fetch)
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_jobs_images_latencies_and_the_queue_are_served(fake: FakeDiscord, tmp_path: Path) -> None:
    first, second = FakeEngine(), FakeEngine()
    bot = make_bot(tmp_path, Engines([first, second]), metrics=Listen("127.0.0.1", 0))
    async with fake.connected(bot):
        assert bot.metrics_port is not None
        for member, count in ((1, 2), (2, 1)):
            options = {"prompt": f"fox {member}", "steps": 2, "count": count}
            await (await fake.slash("imagine", options, user_id=USER_ID + member)).wait_response()
            await fake.wait_for(lambda member=member: len(results(fake)) == member or None)
        first.fail_with = second.fail_with = "The engine refused this."
        await (await fake.slash("imagine", {"prompt": "owl", "steps": 2}, user_id=USER_ID + 3)).wait_response()
        await fake.wait_for(lambda: failed(bot.dispatcher.engine_statuses(0)) == 1 or None)
        samples = await scrape(bot.metrics_port)

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    def per_engine(name: str, **labels: str) -> list[float]:
        """Each engine's sample (a counter's series starts at its first count)."""
        keys = [
            tuple(sorted({**labels, "engine": engine, "device": "fake", "worker": "local"}.items())) for engine in "12"
        ]
        return [samples.get((name, key), 0.0) for key in keys]

    # Each job went to whichever engine was free: the engines' counts add up.
    assert sum(per_engine("sdbot_jobs_total", ending="done")) == 2
    assert sum(per_engine("sdbot_jobs_total", ending="failed")) == 1
    assert sum(per_engine("sdbot_images_total")) == 3
    assert value("sdbot_job_latency_seconds_count") == 3
    # The fake engine reports 0.25 s for each batch it draws.
    assert value("sdbot_job_draw_seconds_bucket", le="0.5") >= 2
    assert value("sdbot_job_draw_seconds_count") == 3
    assert value("sdbot_queue_jobs", state="queued") == value("sdbot_queue_jobs", state="running") == 0
    assert per_engine("sdbot_engine_batches_in_flight") == per_engine("sdbot_engine_restarts_total") == [0, 0]
    # Closed with the bot: nothing listens there any more.
    with pytest.raises(OSError):
        await scrape(bot.metrics_port)


def failed(statuses: list[EngineStatus]) -> int:
    return sum(status.jobs.get(Ending.FAILED, 0) for status in statuses)


@pytest.mark.parametrize(
    ("value", "listen"),
    [("", None), ("9108", Listen("127.0.0.1", 9108)), ("0.0.0.0:9108", Listen("0.0.0.0", 9108))],
)
def test_the_metrics_port_is_off_a_port_or_host_and_port(tmp_path: Path, value: str, listen: Listen | None) -> None:
    settings = load_settings({"DISCORD_TOKEN": TOKEN, "SDBOT_METRICS_PORT": value}, cwd=tmp_path)
    assert settings.metrics == listen


@pytest.mark.parametrize("value", ["metrics", "0", "70000", "host:"])
def test_a_bad_metrics_port_is_one_line_naming_it(tmp_path: Path, value: str) -> None:
    with pytest.raises(SettingError, match="^SDBOT_METRICS_PORT must be a port"):
        load_settings({"DISCORD_TOKEN": TOKEN, "SDBOT_METRICS_PORT": value}, cwd=tmp_path)


async def test_a_port_already_taken_is_one_line_naming_the_setting(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        bot = make_bot(tmp_path, FakeEngine())
        with pytest.raises(MetricsUnavailable, match=f"^SDBOT_METRICS_PORT 127.0.0.1:{port} cannot be listened on"):
            bot.metrics.serve(Listen("127.0.0.1", port))
