"""A worker on memory drivers and a Clock, for the metrics and log tests.

The crunch pool has size 0 (it crunches inline, in this process), so a job
runs to its end synchronously: the tests see its metrics and its log line
without a reactor.
"""

from __future__ import annotations

import io
from typing import Any

import attrs
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import Clock

from profiled.config import Settings, load_settings
from profiled.crunch.pool import CrunchPool
from profiled.drivers import Drivers
from profiled.drivers.memory import MemoryQueue, MemoryStore
from profiled.ids import new_id
from profiled.images import Layout
from profiled.interfaces import Message
from profiled.ops.metrics import Metrics
from profiled.service import instrumented
from profiled.worker.service import WorkerService


@attrs.define
class WorkerRig:
    settings: Settings
    clock: Clock
    raw: Drivers
    drivers: Drivers
    metrics: Metrics
    worker: WorkerService
    layout: Layout

    def enqueue(self, data: bytes, content_type: str = "image/jpeg") -> str:
        """Store an original as the web role does and queue its id; return the id."""
        image_id = new_id()
        key = self.layout.original(image_id)
        self.raw.private.put(key, io.BytesIO(data), len(data), content_type, {"principal": "t"})
        self.raw.queue.send(image_id)
        return image_id

    def receive(self) -> Message:
        d = self.drivers.queue.receive(1, 0)
        messages = _result(d)
        assert len(messages) == 1, messages
        return messages[0]

    def run(self, message: Message) -> None:
        """Run one job to its end (inline pool, memory drivers: no waiting)."""
        _result(ensureDeferred(self.worker.run_job(message)))

    def value(self, name: str, **labels: str) -> float:
        """One sample of the registry (0 when the labelled child does not exist yet)."""
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


def _result(d: Deferred[Any]) -> Any:
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "the Deferred has not fired"
    if hasattr(out[0], "raiseException"):
        out[0].raiseException()
    return out[0]


def make_worker_rig(env: dict[str, str] | None = None) -> WorkerRig:
    """A worker role on memory drivers, timed by a Clock, with its own Metrics."""
    settings = load_settings(environ=env or {}, role="worker")
    clock = Clock()
    clock.advance(1_000_000)  # a plausible epoch: sent_at values are clock seconds
    raw = Drivers(
        MemoryStore(),
        MemoryStore(),
        MemoryQueue(clock, max_receives=settings.worker.max_attempts),
    )
    metrics = Metrics(now=clock.seconds)
    drivers = instrumented(raw, metrics)
    pool = CrunchPool(clock, size=0, memory_limit=512 * 1024 * 1024, time_limit=10)
    worker = WorkerService(settings, drivers, pool, metrics, clock, 1)
    return WorkerRig(
        settings, clock, raw, drivers, metrics, worker, Layout(settings.images.variants)
    )
