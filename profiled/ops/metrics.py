"""Prometheus metrics, one registry per running service (no globals).

Every role gets the same Metrics object; each uses the families it needs,
and /metrics on every listener renders the registry in text format.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, BinaryIO

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from twisted.internet.defer import Deferred
from zope.interface import implementer

from profiled.interfaces import IQueue, IStore, IStoredObject, Message, ObjectInfo, QueueStats

_FAST = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SLOW = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class Metrics:
    """All metric families of profiled, in a registry of their own."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.uploads = Counter(
            "profiled_uploads",
            "Uploads by outcome and status code",
            ["outcome", "code"],
            registry=r,
        )
        self.upload_bytes = Counter(
            "profiled_upload_bytes", "Bytes of accepted uploads", registry=r
        )
        self.http_responses = Counter(
            "profiled_http_responses",
            "HTTP responses by role and status",
            ["role", "code"],
            registry=r,
        )
        self.proxy_responses = Counter(
            "profiled_proxy_responses", "Image proxy responses by status", ["code"], registry=r
        )
        self.queue_lag = Histogram(
            "profiled_queue_receive_lag_seconds",
            "Time from enqueue to claim",
            buckets=_SLOW,
            registry=r,
        )
        self.crunch_seconds = Histogram(
            "profiled_crunch_seconds",
            "Crunch time of one image by source format",
            ["format"],
            buckets=_FAST,
            registry=r,
        )
        self.job_seconds = Histogram(
            "profiled_job_seconds",
            "Whole job time: read, crunch, write, ack",
            buckets=_SLOW,
            registry=r,
        )
        self.images_ready = Counter("profiled_images_ready", "Images made ready", registry=r)
        self.failures = Counter(
            "profiled_images_failed",
            "Images that ended failed, by reason",
            ["reason"],
            registry=r,
        )
        self.retries = Counter(
            "profiled_job_retries",
            "Jobs given back after a transient error",
            ["reason"],
            registry=r,
        )
        self.dead_lettered = Counter(
            "profiled_dead_lettered", "Jobs given up on after their last attempt", registry=r
        )
        self.child_restarts = Counter(
            "profiled_crunch_child_restarts",
            "Crunch child processes replaced",
            ["reason"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "profiled_queue_messages", "Messages in the queue by state", ["state"], registry=r
        )
        self.queue_oldest = Gauge(
            "profiled_queue_oldest_age_seconds",
            "Age of the oldest visible message",
            registry=r,
        )
        self.backend_seconds = Histogram(
            "profiled_backend_call_seconds",
            "Store and queue call latency",
            ["backend", "op"],
            buckets=_FAST,
            registry=r,
        )
        self.backend_errors = Counter(
            "profiled_backend_errors",
            "Store and queue call errors",
            ["backend", "op", "error"],
            registry=r,
        )

    def render(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)

    def record_queue_stats(self, stats: QueueStats) -> None:
        self.queue_depth.labels("visible").set(stats.visible)
        self.queue_depth.labels("in_flight").set(stats.in_flight)
        self.queue_depth.labels("dead").set(stats.dead)
        self.queue_oldest.set(stats.oldest_age or 0)

    def timed(self, backend: str, op: str, d: Deferred[Any]) -> Deferred[Any]:
        """Record the latency and outcome of one backend call."""
        start = time.monotonic()

        def ok(result: Any) -> Any:
            self.backend_seconds.labels(backend, op).observe(time.monotonic() - start)
            return result

        def failed(f: Any) -> Any:
            self.backend_seconds.labels(backend, op).observe(time.monotonic() - start)
            self.backend_errors.labels(backend, op, f.type.__name__).inc()
            return f

        return d.addCallbacks(ok, failed)


@implementer(IStore)
class InstrumentedStore:
    """An IStore that records latency and errors of every call."""

    def __init__(self, store: IStore, name: str, metrics: Metrics) -> None:
        self.store, self.name, self.metrics = store, name, metrics

    def put(
        self,
        key: str,
        source: BinaryIO,
        length: int,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
        cache_control: str | None = None,
    ) -> Deferred[ObjectInfo]:
        return self.metrics.timed(
            self.name,
            "put",
            self.store.put(key, source, length, content_type, metadata, cache_control),
        )

    def head(self, key: str) -> Deferred[ObjectInfo | None]:
        return self.metrics.timed(self.name, "head", self.store.head(key))

    def get(self, key: str) -> Deferred[IStoredObject]:
        return self.metrics.timed(self.name, "get", self.store.get(key))

    def delete(self, key: str) -> Deferred[None]:
        return self.metrics.timed(self.name, "delete", self.store.delete(key))

    def ping(self) -> Deferred[None]:
        return self.metrics.timed(self.name, "ping", self.store.ping())


@implementer(IQueue)
class InstrumentedQueue:
    """An IQueue that records latency and errors of every call."""

    def __init__(self, queue: IQueue, metrics: Metrics) -> None:
        self.queue, self.metrics = queue, metrics

    def send(self, body: str, delay: float = 0) -> Deferred[None]:
        return self.metrics.timed("queue", "send", self.queue.send(body, delay))

    def receive(self, max_messages: int = 1, wait: float = 0) -> Deferred[list[Message]]:
        return self.metrics.timed("queue", "receive", self.queue.receive(max_messages, wait))

    def ack(self, message: Message) -> Deferred[None]:
        return self.metrics.timed("queue", "ack", self.queue.ack(message))

    def release(self, message: Message, delay: float = 0) -> Deferred[None]:
        return self.metrics.timed("queue", "release", self.queue.release(message, delay))

    def extend(self, message: Message, timeout: float) -> Deferred[Message]:
        return self.metrics.timed("queue", "extend", self.queue.extend(message, timeout))

    def stats(self) -> Deferred[QueueStats]:
        return self.metrics.timed("queue", "stats", self.queue.stats())

    def ping(self) -> Deferred[None]:
        return self.metrics.timed("queue", "ping", self.queue.ping())
