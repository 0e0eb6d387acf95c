"""Prometheus metrics, one registry per running service (no globals).

Every role gets the same Metrics object; each uses the families it needs,
and /metrics on every listener renders the registry in text format.

Who feeds what:

- web role: ``uploads`` (every answer to ``POST /v1/images``, early
  refusals included), ``upload_bytes``;
- worker role: ``queue_lag`` (first delivery only: enqueue to claim),
  ``crunch_seconds``, ``job_seconds``, ``images_ready``, ``failures``,
  ``retries``, ``dead_lettered``, ``queue_depth`` and ``queue_oldest``
  (polled), ``child_restarts`` and ``child_recycled`` (the pool's events);
- proxy role: ``proxy_responses``;
- every listener: ``http_responses`` and ``http_seconds`` (the access log);
- every store and queue call: ``backend_seconds`` and ``backend_errors``
  (InstrumentedStore, InstrumentedQueue).

docs/operations.md lists them with the alerts worth having.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure
from zope.interface import alsoProvides, implementer

from profiled.errors import NotFound
from profiled.interfaces import (
    IAdoptingStore,
    IQueue,
    ISpooledBody,
    IStore,
    IStoredObject,
    Message,
    ObjectInfo,
    QueueStats,
)

_FAST = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SLOW = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class Metrics:
    """All metric families of profiled, in a registry of their own.

    ``now`` is the clock that backend calls are timed with (a monotonic
    one; tests pass a ``Clock``'s ``seconds``).
    """

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self.now = now
        #: backend_seconds' child of each (backend, op), looked up once.
        self._call_seconds: dict[tuple[str, str], Any] = {}
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
            "Answered HTTP requests by route (api, proxy, ops, page, other) and status",
            ["route", "code"],
            registry=r,
        )
        self.http_seconds = Histogram(
            "profiled_http_request_seconds",
            "Time from a request's first line to its last byte, by route",
            ["route"],
            buckets=_FAST,
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
            "Crunch child processes that died or were killed, and were replaced",
            ["reason"],
            registry=r,
        )
        self.child_recycled = Counter(
            "profiled_crunch_child_recycled",
            "Crunch child processes replaced as planned after worker.max_jobs_per_child images",
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

    def pool_event(self, name: str, fields: Mapping[str, Any]) -> None:
        """The crunch pool's ``on_event`` callback."""
        if name == "child_restart":
            self.child_restarts.labels(str(fields.get("reason", "unknown"))).inc()
        elif name == "child_recycled":
            self.child_recycled.inc()

    def record_queue_stats(self, stats: QueueStats) -> None:
        self.queue_depth.labels("visible").set(stats.visible)
        self.queue_depth.labels("in_flight").set(stats.in_flight)
        self.queue_depth.labels("dead").set(stats.dead)
        self.queue_oldest.set(stats.oldest_age or 0)

    def timed(self, backend: str, op: str, d: Deferred[Any]) -> Deferred[Any]:
        """Record the latency and outcome of one backend call.

        A ``NotFound`` is timed but is no error (the proxy's 404s would
        swamp real ones); a cancelled call (a long poll given up when the
        worker stops) is neither. A call answered at once (the local store's
        read cache) is counted as taking no time, without a callback: that
        is the proxy's hot path.
        """
        seconds = self._call_seconds.get((backend, op))
        if seconds is None:
            seconds = self._call_seconds[(backend, op)] = self.backend_seconds.labels(backend, op)
        if d.called and not isinstance(d.result, Failure):
            seconds.observe(0.0)
            return d
        start = self.now()

        def ok(result: Any) -> Any:
            seconds.observe(max(0.0, self.now() - start))
            return result

        def failed(f: Failure) -> Failure:
            if f.check(CancelledError):  # a long poll given up at stop: no call to time
                return f
            seconds.observe(max(0.0, self.now() - start))
            if not f.check(NotFound):  # a missing key is an answer, not an error
                self.backend_errors.labels(backend, op, f.type.__name__).inc()  # type: ignore[union-attr]
            return f

        return d.addCallbacks(ok, failed)


@implementer(IStore)
class InstrumentedStore:
    """An IStore that records latency and errors of every call."""

    def __init__(self, store: IStore, name: str, metrics: Metrics) -> None:
        self.store, self.name, self.metrics = store, name, metrics
        if IAdoptingStore.providedBy(store):
            # Wrapping must not hide the capability from the web role.
            alsoProvides(self, IAdoptingStore)

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

    # IAdoptingStore, provided only when the wrapped store provides it.

    def spool(self) -> ISpooledBody:
        return IAdoptingStore(self.store).spool()

    def adopt(
        self,
        key: str,
        body: ISpooledBody,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
        cache_control: str | None = None,
    ) -> Deferred[ObjectInfo]:
        """Timed as a put: for the store's dashboards it is one."""
        store = IAdoptingStore(self.store)
        return self.metrics.timed(
            self.name, "put", store.adopt(key, body, content_type, metadata, cache_control)
        )


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
