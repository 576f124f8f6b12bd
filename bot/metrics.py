"""Prometheus metrics (SDBOT_METRICS_PORT): the queue, each engine's jobs and images, job latencies, engine restarts.

Counters and histograms are fed as jobs leave their engines; the queue and the engines' state are read when
Prometheus scrapes, so nothing can drift from what the bot holds.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from bot.pipeline.dispatch import Dispatcher
from bot.pipeline.engine_stats import JobEnd
from bot.pipeline.fair_queue import FairQueue
from bot.pipeline.progress import Clock
from bot.settings import Listen
from core.jobs import Job

log = logging.getLogger(__name__)

# Seconds: a few for a small job on a fast GPU, up to the quarter hour a long queue may take.
LATENCY_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 900)
# Each engine's series: its number, its device, and the worker serving it ("local" for the bot's own).
ENGINE_LABELS = ["engine", "device", "worker"]


class MetricsUnavailable(RuntimeError):
    """SDBOT_METRICS_PORT cannot be listened on; the message is one line for the operator."""


class _Live(Collector):
    """What is read at each scrape: jobs waiting and running, batches in flight, engine restarts."""

    def __init__(self, dispatcher: Dispatcher, queue: FairQueue[Job], clock: Clock) -> None:
        self.dispatcher = dispatcher
        self.queue = queue
        self.clock = clock

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        jobs = GaugeMetricFamily("sdbot_queue_jobs", "Jobs in the queue, by state", labels=["state"])
        jobs.add_metric(["queued"], len(self.queue))
        jobs.add_metric(["running"], len(self.dispatcher.running_jobs()))
        yield jobs
        in_flight = GaugeMetricFamily(
            "sdbot_engine_batches_in_flight",
            "Batches sent to an engine and not yet answered",
            labels=ENGINE_LABELS,
        )
        restarts = CounterMetricFamily(
            "sdbot_engine_restarts",
            "Times an engine was started again after dying",
            labels=ENGINE_LABELS,
        )
        for status in self.dispatcher.engine_statuses(self.clock()):
            labels = [str(status.number), status.device, status.host]
            in_flight.add_metric(labels, status.in_flight)
            restarts.add_metric(labels, status.restarts)
        yield in_flight
        yield restarts


class Metrics:
    """The bot's metrics in a registry of its own (several bots may share a process in the tests)."""

    def __init__(self, dispatcher: Dispatcher, queue: FairQueue[Job], clock: Clock) -> None:
        self.registry = CollectorRegistry()
        labels = ENGINE_LABELS
        self.jobs = Counter(
            "sdbot_jobs", "Jobs that left an engine, by how they ended", [*labels, "ending"], registry=self.registry
        )
        self.images = Counter("sdbot_images", "Images drawn", labels, registry=self.registry)
        self.waited = Histogram(
            "sdbot_job_wait_seconds",
            "From the member's command to the engine",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.drawn = Histogram(
            "sdbot_job_draw_seconds",
            "The engine's time for a job's batch",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.latency = Histogram(
            "sdbot_job_latency_seconds",
            "From the member's command to the job leaving its engine",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_Live(dispatcher, queue, clock))
        dispatcher.job_ended.append(self.observe)
        self._server: WSGIServer | None = None

    def observe(self, end: JobEnd) -> None:
        labels = (str(end.engine), end.device, end.worker)
        self.jobs.labels(*labels, end.ending.value).inc()
        self.images.labels(*labels).inc(end.images)
        self.waited.observe(end.waited_s)
        self.drawn.observe(end.drawn_s)
        self.latency.observe(end.total_s)

    def serve(self, listen: Listen) -> int:
        """Serve /metrics over HTTP on a thread of its own; the port it listens on (0 picks a free one)."""
        try:
            # Its thread is a daemon that ends with the server.
            self._server, _ = start_http_server(listen.port, addr=listen.host, registry=self.registry)
        except OSError as exc:
            raise MetricsUnavailable(
                f"SDBOT_METRICS_PORT {listen.host}:{listen.port} cannot be listened on: {exc.strerror or exc}"
            ) from None
        port = int(self._server.server_port)
        log.info("metrics on http://%s:%d/metrics", listen.host, port)
        return port

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
