"""The worker's job logic over memory drivers, a Clock and a scripted pool."""

from __future__ import annotations

import io
import json
import os

import pytest
from PIL import Image
from twisted.internet import defer
from twisted.internet.task import Clock

from profiled.config import load_settings
from profiled.crunch.pipeline import CrunchFailed, CrunchResult, VariantFile
from profiled.crunch.pool import PoolStopped
from profiled.drivers import Drivers
from profiled.drivers.memory import MemoryQueue, MemoryStore
from profiled.ops.metrics import Metrics
from profiled.worker.service import WorkerService

ID = "0123456789abcdef0123456789abcdef"


class ScriptedPool:
    """Stands in for CrunchPool: fails as told, else writes tiny variant files."""

    def __init__(self) -> None:
        self.fail_with: Exception | None = None
        self.calls = 0
        self.before_return = None

    def crunch(self, src, out_dir, spec):  # type: ignore[no-untyped-def]
        self.calls += 1
        if self.fail_with is not None:
            return defer.fail(self.fail_with)
        variants = []
        for name, box in spec.variants:
            path = os.path.join(out_dir, name)
            Image.new("RGB", (box, box)).save(path, "JPEG")
            variants.append(VariantFile(name, path, "image/jpeg", box, box, os.path.getsize(path)))
        if self.before_return is not None:
            self.before_return()
        return defer.succeed(CrunchResult("jpeg", 10, 10, tuple(variants)))


@pytest.fixture
def world():
    clock = Clock()
    settings = load_settings(
        environ={"PROFILED_WORKER_MAX_ATTEMPTS": "3", "PROFILED_WORKER_RETRY_DELAY": "2"}
    )
    drivers = Drivers(MemoryStore(), MemoryStore(), MemoryQueue(clock, 60, 3))
    pool = ScriptedPool()
    worker = WorkerService(settings, drivers, pool, Metrics(), clock, 1)  # type: ignore[arg-type]
    drivers.private.put(f"originals/{ID}", io.BytesIO(b"orig"), 4, "image/jpeg")
    drivers.queue.send(ID)
    return clock, drivers, pool, worker


def run_one(world):
    clock, drivers, _, worker = world
    [message] = drivers.queue.receive(1).result
    d = defer.ensureDeferred(worker.run_job(message))
    clock.advance(0)
    assert d.called
    return message


def entry(drivers):
    return drivers.queue.entries[0] if drivers.queue.entries else None


def test_job_publishes_variants_default_last_and_acks(world):
    """A good job writes all variants (default last) and removes the message."""
    _, drivers, _, _ = world
    order = []
    real_put = drivers.public.put
    drivers.public.put = lambda key, *a, **k: (order.append(key), real_put(key, *a, **k))[1]
    run_one(world)
    assert order == [f"{ID}_small", f"{ID}_large", ID]
    info, _ = drivers.public.objects[ID]
    assert info.cache_control == "public, max-age=31536000, immutable"
    assert drivers.queue.entries == []


def test_duplicate_delivery_does_no_work(world):
    """A job whose image is already ready is acked without crunching."""
    _, drivers, pool, _ = world
    drivers.public.put(ID, io.BytesIO(b"x"), 1, "image/jpeg")
    run_one(world)
    assert pool.calls == 0
    assert drivers.queue.entries == []


def test_deleted_original_is_acked(world):
    """A job whose original is gone is dropped."""
    _, drivers, pool, _ = world
    drivers.private.objects.clear()
    run_one(world)
    assert pool.calls == 0
    assert drivers.queue.entries == []


def test_bad_image_ends_failed_at_once(world):
    """A corrupt image gets a failure record with its reason and is acked."""
    _, drivers, pool, _ = world
    pool.fail_with = CrunchFailed("corrupt", "broken data")
    run_one(world)
    _, record = drivers.private.objects[f"failures/{ID}"]
    assert json.loads(record)["reason"] == "corrupt"
    assert drivers.queue.entries == []


def test_crashed_child_is_retried_then_failed(world):
    """A crashed child is retried with backoff; on the last attempt the image ends failed."""
    clock, drivers, pool, _ = world
    pool.fail_with = CrunchFailed("crashed", "child died")
    run_one(world)
    assert f"failures/{ID}" not in drivers.private.objects
    assert entry(drivers).visible_at == pytest.approx(clock.seconds() + 2)
    clock.advance(2)
    run_one(world)
    assert entry(drivers).visible_at == pytest.approx(clock.seconds() + 4)
    clock.advance(4)
    run_one(world)
    _, record = drivers.private.objects[f"failures/{ID}"]
    assert json.loads(record)["reason"] == "crashed"
    assert drivers.queue.entries == []


def test_pool_stopping_releases_without_failing(world):
    """A job the stopping pool refused goes back at once and is not marked failed."""
    clock, drivers, pool, _ = world
    pool.fail_with = PoolStopped()
    run_one(world)
    assert f"failures/{ID}" not in drivers.private.objects
    assert entry(drivers).visible_at <= clock.seconds()


def test_store_down_retries_then_parks_with_failure(world):
    """Transient errors back off; the last attempt records a failure and is dead-lettered."""
    clock, drivers, _, _ = world
    drivers.public.down = True
    for delay in (2, 4):
        run_one(world)
        assert entry(drivers).visible_at == pytest.approx(clock.seconds() + delay)
        clock.advance(delay)
    run_one(world)
    _, record = drivers.private.objects[f"failures/{ID}"]
    assert json.loads(record)["reason"] == "unavailable"
    assert drivers.queue.receive(1).result == []
    assert len(drivers.queue.dead) == 1


def test_delete_racing_the_job_takes_variants_back(world):
    """An image deleted while it was crunched leaves no variants behind."""
    _, drivers, pool, _ = world
    pool.before_return = lambda: drivers.private.objects.clear()
    run_one(world)
    assert drivers.public.objects == {}
    assert drivers.queue.entries == []


def test_garbage_message_is_dropped(world):
    """A message that is not an image id is acked and ignored."""
    _, drivers, pool, _ = world
    drivers.queue.entries.clear()
    drivers.queue.send("../../etc/passwd")
    run_one(world)
    assert pool.calls == 0
    assert drivers.queue.entries == []


def test_redelivery_after_delete_removes_leftover_variants(world):
    """Variants left by a worker that died after a DELETE are removed on redelivery."""
    _, drivers, pool, _ = world
    drivers.private.objects.clear()
    for key in (f"{ID}_small", f"{ID}_large", ID):
        drivers.public.put(key, io.BytesIO(b"x"), 1, "image/jpeg")
    run_one(world)
    assert pool.calls == 0
    assert drivers.public.objects == {}
    assert drivers.queue.entries == []
