"""Every metric family exists and is fed by what it counts (memory drivers, a Clock)."""

from __future__ import annotations

import io

import pytest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from profiled.config import load_settings
from profiled.crunch.pool import CrunchPool
from profiled.drivers import Drivers
from profiled.drivers.memory import MemoryQueue, MemoryStore
from profiled.errors import NotFound, Unavailable
from profiled.ops.metrics import InstrumentedQueue, InstrumentedStore, Metrics
from profiled.service import make_service
from tests import images
from tests.unit.wire import Harness, make_harness
from tests.unit.worker_rig import make_worker_rig

#: Every family the operations docs promise, by its exposed name.
FAMILIES = {
    "profiled_uploads": "counter",
    "profiled_upload_bytes": "counter",
    "profiled_http_responses": "counter",
    "profiled_http_request_seconds": "histogram",
    "profiled_proxy_responses": "counter",
    "profiled_queue_receive_lag_seconds": "histogram",
    "profiled_crunch_seconds": "histogram",
    "profiled_job_seconds": "histogram",
    "profiled_images_ready": "counter",
    "profiled_images_failed": "counter",
    "profiled_job_retries": "counter",
    "profiled_dead_lettered": "counter",
    "profiled_crunch_child_restarts": "counter",
    "profiled_crunch_child_recycled": "counter",
    "profiled_queue_messages": "gauge",
    "profiled_queue_oldest_age_seconds": "gauge",
    "profiled_backend_call_seconds": "histogram",
    "profiled_backend_errors": "counter",
}

ID = "0123456789abcdef0123456789abcdef"


def scrape(h: Harness) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET /metrics and parse it as Prometheus does: {(sample name, labels): value}."""
    r = h.request("GET", "/metrics")
    assert r.status == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    out = {}
    for family in text_string_to_metric_families(r.body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def uploads(samples, outcome: str, code: str) -> float:  # type: ignore[no-untyped-def]
    return samples.get(("profiled_uploads_total", (("code", code), ("outcome", outcome))), 0.0)


def test_every_family_is_exposed_with_its_type():
    """/metrics text names every promised family, with its help text and Prometheus type."""
    text = Metrics().render().decode()
    found = {f.name: (f.type, f.documentation) for f in text_string_to_metric_families(text)}
    for name, kind in FAMILIES.items():
        assert name in found, name
        assert found[name][0] == kind, name
        assert found[name][1], name


def test_accepted_upload_counts_outcome_code_and_bytes():
    """A 202 upload counts as accepted/202 and adds its size to the upload bytes."""
    h = make_harness()
    data = images.jpeg((40, 30))
    assert h.upload(data).status == 202
    samples = scrape(h)
    assert uploads(samples, "accepted", "202") == 1
    assert samples[("profiled_upload_bytes_total", ())] == len(data)


@pytest.mark.parametrize(
    ("send", "code"),
    [
        # Early: answered from the headers or the first bytes, before any route runs.
        (lambda h: h.upload(b"x", **{"Content-Length": str(50 * 1024 * 1024)}), "413"),
        (lambda h: h.upload(images.jpeg(), content_type="text/plain"), "415"),
        (lambda h: h.upload(images.random_bytes(4096)), "415"),
        (lambda h: h.upload(images.declared_png(), content_type="image/png"), "422"),
        # Late: refused by the route.
        (lambda h: h.upload(b""), "400"),
    ],
    ids=["413-length", "415-declared", "415-sniffed", "422-dimensions", "400-empty"],
)
def test_refusals_count_by_status_code(send, code):  # type: ignore[no-untyped-def]
    """Every refused upload counts once as refused with its status, early refusals included."""
    h = make_harness()
    response = send(h)
    assert response.status == int(code)
    samples = scrape(h)
    assert uploads(samples, "refused", code) == 1
    assert uploads(samples, "accepted", "202") == 0
    assert samples.get(("profiled_upload_bytes_total", ()), 0) == 0


def test_store_down_counts_failed_503_and_backend_error():
    """An upload answered 503 counts as failed/503, and the store call as an Unavailable error."""
    h = make_harness()
    h.drivers.private.down = True
    assert h.upload(images.jpeg()).status == 503
    samples = scrape(h)
    assert uploads(samples, "failed", "503") == 1
    key = (
        "profiled_backend_errors_total",
        (("backend", "private"), ("error", "Unavailable"), ("op", "put")),
    )
    assert samples[key] >= 1


def test_proxy_responses_by_status():
    """The proxy counts 200, 304, 404 and 503 answers by status."""
    h = make_harness()
    h.drivers.public.put(ID, io.BytesIO(b"jpeg"), 4, "image/jpeg")
    etag = h.request("GET", "/a/" + ID).headers["etag"]
    assert h.request("GET", "/a/" + ID, headers={"If-None-Match": etag}).status == 304
    assert h.request("GET", "/a/" + ID + "_small").status == 404
    h.drivers.public.down = True
    assert h.request("GET", "/a/" + ID).status == 503
    samples = scrape(h)
    for code in ("200", "304", "404", "503"):
        assert samples[("profiled_proxy_responses_total", (("code", code),))] == 1, code


def test_http_responses_by_route_and_status():
    """Every answered request counts by route and status, with its duration."""
    h = make_harness()
    h.request("GET", "/__lbheartbeat__")
    h.request("GET", "/v1/images/" + ID)
    h.request("GET", "/a/" + ID)
    h.request("GET", "/nowhere")
    samples = scrape(h)
    for route, code in (("ops", "200"), ("api", "404"), ("proxy", "404"), ("other", "404")):
        key = ("profiled_http_responses_total", (("code", code), ("route", route)))
        assert samples[key] == 1, (route, code)
    assert samples[("profiled_http_request_seconds_count", (("route", "api"),))] == 1


def test_backend_calls_are_timed_by_operation():
    """A store call's latency is observed under its backend and operation."""
    clock = Clock()
    metrics = Metrics(now=clock.seconds)
    slow: Deferred[None] = Deferred()

    class SlowStore(MemoryStore):
        def delete(self, key: str) -> Deferred[None]:
            return slow

    store = InstrumentedStore(SlowStore(), "public", metrics)
    done = store.delete("x")
    clock.advance(0.3)
    slow.callback(None)
    assert done.called
    value = metrics.registry.get_sample_value
    labels = {"backend": "public", "op": "delete"}
    assert value("profiled_backend_call_seconds_count", labels) == 1
    assert value("profiled_backend_call_seconds_sum", labels) == pytest.approx(0.3)
    assert value("profiled_backend_call_seconds_bucket", {**labels, "le": "0.25"}) == 0
    assert value("profiled_backend_call_seconds_bucket", {**labels, "le": "0.5"}) == 1


def test_calls_are_timed_whether_answered_at_once_or_later():
    """A call answered at once (a read-cache hit) counts as taking no time; a later
    answer counts the time it took."""
    clock = Clock()
    metrics = Metrics(now=clock.seconds)
    value = metrics.registry.get_sample_value
    later: Deferred[object] = Deferred()

    class Store(MemoryStore):
        def head(self, key: str):  # type: ignore[no-untyped-def]
            return later

    store = InstrumentedStore(Store(), "public", metrics)
    store.put("k", io.BytesIO(b"x"), 1, "image/png")
    store.get("k").addCallback(lambda obj: obj.abandon())
    labels = {"backend": "public", "op": "get"}
    assert value("profiled_backend_call_seconds_count", labels) == 1
    assert value("profiled_backend_call_seconds_sum", labels) == 0.0
    store.head("k")
    clock.advance(0.25)
    later.callback(None)
    labels = {"backend": "public", "op": "head"}
    assert value("profiled_backend_call_seconds_count", labels) == 1
    assert value("profiled_backend_call_seconds_sum", labels) == 0.25


def test_backend_errors_by_type_not_found_and_cancel_excluded():
    """Failed calls count by error type; a NotFound or a cancelled long poll is no error."""
    metrics = Metrics()
    value = metrics.registry.get_sample_value

    class Flaky(MemoryStore):
        def head(self, key: str):  # type: ignore[no-untyped-def]
            return fail(Unavailable("down"))

        def get(self, key: str):  # type: ignore[no-untyped-def]
            return fail(NotFound(key))

    store = InstrumentedStore(Flaky(), "private", metrics)
    store.head("k").addErrback(lambda f: None)
    store.get("k").addErrback(lambda f: None)
    assert (
        value(
            "profiled_backend_errors_total",
            {"backend": "private", "op": "head", "error": "Unavailable"},
        )
        == 1
    )
    assert (
        value(
            "profiled_backend_errors_total",
            {"backend": "private", "op": "get", "error": "NotFound"},
        )
        is None
    )
    assert value("profiled_backend_call_seconds_count", {"backend": "private", "op": "get"}) == 1

    class Waiting(MemoryQueue):
        def receive(self, max_messages: int = 1, wait: float = 0):  # type: ignore[no-untyped-def]
            return Deferred()

    queue = InstrumentedQueue(Waiting(Clock()), metrics)
    d = queue.receive(1, 20)
    d.addErrback(lambda f: None)
    d.cancel()
    # (the series may exist, at zero: its child is looked up before the call ends)
    assert not value("profiled_backend_call_seconds_count", {"backend": "queue", "op": "receive"})
    errors = next(s for s in metrics.registry.collect() if s.name == "profiled_backend_errors")
    assert {s.labels["op"] for s in errors.samples if s.name.endswith("_total")} == {"head"}


def test_queue_calls_are_instrumented():
    """send, receive, ack and stats of the queue are timed under backend 'queue'."""
    rig = make_worker_rig()
    rig.drivers.queue.send("x")
    message = rig.receive()
    rig.drivers.queue.ack(message)
    rig.drivers.queue.stats()
    for op in ("send", "receive", "ack", "stats"):
        assert rig.value("profiled_backend_call_seconds_count", backend="queue", op=op) == 1, op


def test_job_feeds_lag_crunch_job_and_ready():
    """A job observes its queue lag (enqueue to claim), crunch time by format, and readiness."""
    rig = make_worker_rig()
    rig.enqueue(images.jpeg((80, 60)))
    rig.clock.advance(2.5)
    rig.run(rig.receive())
    assert rig.value("profiled_queue_receive_lag_seconds_count") == 1
    assert rig.value("profiled_queue_receive_lag_seconds_sum") == pytest.approx(2.5)
    assert rig.value("profiled_crunch_seconds_count", format="jpeg") == 1
    assert rig.value("profiled_job_seconds_count") == 1
    assert rig.value("profiled_images_ready_total") == 1
    assert rig.value("profiled_images_failed_total", reason="corrupt") == 0


def test_redelivery_does_not_count_as_queue_lag():
    """A redelivered job (after a retry delay) adds no receive-lag observation."""
    rig = make_worker_rig({"PROFILED_WORKER_RETRY_DELAY": "1"})
    rig.enqueue(images.jpeg())
    rig.raw.public.down = True
    rig.run(rig.receive())
    rig.raw.public.down = False
    rig.clock.advance(5)
    rig.run(rig.receive())
    assert rig.value("profiled_images_ready_total") == 1
    assert rig.value("profiled_queue_receive_lag_seconds_count") == 1


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (images.truncated(images.jpeg((200, 200))), "corrupt"),
        (images.memory_bomb_png(8000, 8000), "too_many_pixels"),
    ],
    ids=["corrupt", "too_many_pixels"],
)
def test_bad_image_counts_failure_by_reason(data: bytes, reason: str):
    """An image that cannot be crunched counts under its failure reason, not as ready."""
    rig = make_worker_rig({"PROFILED_IMAGES_MAX_PIXELS": "1000000"})
    rig.enqueue(data, "image/png" if data.startswith(b"\x89PNG") else "image/jpeg")
    rig.run(rig.receive())
    assert rig.value("profiled_images_failed_total", reason=reason) == 1
    assert rig.value("profiled_images_ready_total") == 0


def test_transient_errors_retry_then_dead_letter():
    """Transient errors count as retries by type; the last attempt counts as dead-lettered."""
    rig = make_worker_rig({"PROFILED_WORKER_MAX_ATTEMPTS": "2", "PROFILED_WORKER_RETRY_DELAY": "1"})
    rig.enqueue(images.jpeg())
    rig.raw.public.down = True
    rig.run(rig.receive())
    assert rig.value("profiled_job_retries_total", reason="Unavailable") == 1
    assert rig.value("profiled_dead_lettered_total") == 0
    rig.clock.advance(5)
    rig.run(rig.receive())
    assert rig.value("profiled_job_retries_total", reason="Unavailable") == 2
    assert rig.value("profiled_dead_lettered_total") == 1
    assert rig.value("profiled_images_failed_total", reason="unavailable") == 1
    assert (
        rig.value("profiled_backend_errors_total", backend="public", op="head", error="Unavailable")
        == 2
    )


def test_queue_gauges_follow_the_queue():
    """The worker polls the queue's depth by state and the age of its oldest message."""
    rig = make_worker_rig()  # long polls wait on the Clock
    rig.raw.queue.send(ID, delay=100)  # not yet visible: it counts as in flight
    rig.worker.startService()
    try:
        assert rig.value("profiled_queue_messages", state="visible") == 0
        assert rig.value("profiled_queue_messages", state="in_flight") == 1
        rig.raw.queue.dead.append(rig.raw.queue.entries[0])
        rig.clock.advance(15)
        assert rig.value("profiled_queue_messages", state="dead") == 1
    finally:
        stopped = rig.worker.stopService()
        rig.clock.advance(30)
        assert stopped.called
    metrics = Metrics()
    clock = Clock()
    queue = MemoryQueue(clock)
    for _ in range(3):
        queue.send(ID)
    clock.advance(7)
    metrics.record_queue_stats(queue.stats().result)
    value = metrics.registry.get_sample_value
    assert value("profiled_queue_messages", {"state": "visible"}) == 3
    assert value("profiled_queue_oldest_age_seconds") == 7


def test_pool_events_count_restarts_by_reason():
    """Child restarts count by reason; planned recycling counts apart; other events are ignored."""
    metrics = Metrics()
    metrics.pool_event("child_restart", {"pid": 10, "reason": "timeout"})
    metrics.pool_event("child_restart", {"pid": 11, "reason": "timeout"})
    metrics.pool_event("child_restart", {"pid": 12, "reason": "out_of_memory"})
    metrics.pool_event("child_recycled", {"pid": 13, "jobs": 500})
    metrics.pool_event("child_started", {"pid": 14})
    value = metrics.registry.get_sample_value
    assert value("profiled_crunch_child_restarts_total", {"reason": "timeout"}) == 2
    assert value("profiled_crunch_child_restarts_total", {"reason": "out_of_memory"}) == 1
    assert value("profiled_crunch_child_recycled_total") == 1


def test_service_wires_the_pool_events_to_metrics():
    """In a worker built by make_service, the crunch pool's events reach /metrics."""
    settings = load_settings(environ={}, role="worker")
    clock = Clock()
    drivers = Drivers(MemoryStore(), MemoryStore(), MemoryQueue(clock))
    top = make_service(settings, clock, drivers)  # type: ignore[arg-type]
    pool = next(s for s in top if isinstance(s, CrunchPool))
    assert pool.on_event is not None
    pool.on_event("child_restart", {"pid": 1, "reason": "crashed"})
    site = next(s for s in top if hasattr(s, "factory")).factory
    text = site.request_log.metrics.render().decode()
    assert 'profiled_crunch_child_restarts_total{reason="crashed"} 1.0' in text


def test_succeed_and_fail_pass_through_unchanged():
    """Instrumented calls hand back the driver's own result or failure."""
    metrics = Metrics()
    d = metrics.timed("queue", "send", succeed("answer"))
    assert d.result == "answer"
    failed = metrics.timed("queue", "send", fail(Unavailable("no")))
    failure = failed.result
    failed.addErrback(lambda f: None)
    assert isinstance(failure, Failure) and failure.check(Unavailable)


def test_instrumented_store_keeps_the_adopting_capability(tmp_path):
    """Wrapping a store that adopts spooled bodies keeps IAdoptingStore (timed as a put);
    wrapping one that does not adds nothing."""
    from profiled.drivers.local.store import LocalStore
    from profiled.interfaces import IAdoptingStore
    from tests.unit.wire import InlineClock

    metrics = Metrics()
    assert not IAdoptingStore.providedBy(InstrumentedStore(MemoryStore(), "private", metrics))
    store = InstrumentedStore(LocalStore(tmp_path, reactor=InlineClock()), "private", metrics)
    assert IAdoptingStore.providedBy(store)
    body = store.spool()
    body.write(b"bytes")
    assert store.adopt("k", body, "image/jpeg").result.size == 5
    labels = {"backend": "private", "op": "put"}
    assert metrics.registry.get_sample_value("profiled_backend_call_seconds_count", labels) == 1
