"""The worker role: take ids off the queue and turn originals into variants.

One receive loop keeps up to ``concurrency`` jobs in flight (one per crunch
child). A job is idempotent, so a duplicate delivery or a retry after a
crash does no harm:

1. ready already (the default variant exists) -> ack;
2. no original (deleted meanwhile) -> ack;
3. download the original, crunch it in the pool, write the variants with
   the default one last, ack;
4. a bad image (CrunchFailed) -> failure record, ack: it ends ``failed``;
   except a crunch child that ``crashed`` (which may be the machine's fault,
   not the image's): that is retried like a transient error;
5. a transient error (store or queue down) -> release with exponential
   backoff; on the last attempt a failure record is written too, and the
   queue parks the message in its dead-letter store on the next receive;
6. the pool stopping under a queued job (shutdown) -> release at once.

While a job runs, its message's visibility is extended, so a slow job is
not handed to a second worker; if the worker dies, it comes back after the
visibility timeout.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import time
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger

from profiled.config import Settings
from profiled.crunch.pipeline import CrunchFailed, CrunchResult, CrunchSpec
from profiled.crunch.pool import CrunchPool, PoolStopped
from profiled.crunch.sniff import ImageLimits
from profiled.drivers import Drivers
from profiled.drivers.consumers import download
from profiled.errors import LostClaim
from profiled.ids import is_valid_id
from profiled.images import Layout, failure_record, unpublish
from profiled.interfaces import Message
from profiled.ops.metrics import Metrics

IMMUTABLE = "public, max-age=31536000, immutable"
#: Longest delay between two tries of a job after transient errors.
MAX_RETRY_DELAY = 300.0
#: Crunch failures that may not be the image's fault, so worth another try.
RETRIED_REASONS = frozenset({"crashed"})


def crunch_spec(settings: Settings) -> CrunchSpec:
    """What to make of each image, from the configuration."""
    images = settings.images
    return CrunchSpec(
        variants=tuple(images.variants.items()),
        mode=images.mode,
        jpeg_quality=images.jpeg_quality,
        limits=ImageLimits(images.max_pixels, images.max_side, images.max_frames),
    )


class WorkerService(Service):
    """Receives jobs and runs them, up to ``concurrency`` at a time."""

    log = Logger()

    def __init__(
        self,
        settings: Settings,
        drivers: Drivers,
        pool: CrunchPool,
        metrics: Metrics,
        clock: IReactorTime,
        concurrency: int,
    ) -> None:
        self.settings = settings
        self.drivers = drivers
        self.pool = pool
        self.metrics = metrics
        self.clock = clock
        self.concurrency = max(1, concurrency)
        self.layout = Layout(settings.images.variants)
        self.spec = crunch_spec(settings)
        self.visibility = settings.worker.visibility_timeout
        self.in_flight: dict[str, Deferred[None]] = {}
        self._loop: Deferred[None] | None = None
        self._receiving: Deferred[Any] | None = None
        self._slot_free: Deferred[None] | None = None
        self._stats = LoopingCall(self._record_stats)
        self._stats.clock = clock
        self.running_loop = False

    # -- service ---------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.running_loop = True
        self._loop = ensureDeferred(self._receive_loop())
        self._loop.addErrback(lambda f: self.log.failure("worker loop died", f))
        self._stats.start(15.0, now=True)

    def stopService(self) -> Deferred[None]:
        """Stop taking jobs; finish those in flight (bounded); release the rest."""
        super().stopService()
        self.running_loop = False
        if self._stats.running:
            self._stats.stop()
        if self._receiving is not None:
            self._receiving.cancel()
        if self._slot_free is not None and not self._slot_free.called:
            self._slot_free.callback(None)
        return ensureDeferred(self._drain())

    async def _drain(self) -> None:
        if self._loop is not None:
            try:
                await self._loop
            except Exception:
                self.log.failure("worker loop ended with an error")
        jobs = list(self.in_flight.values())
        if jobs:
            self.log.info("waiting for {n} job(s) in flight", n=len(jobs))
            bound = deferLater(self.clock, self.settings.images.crunch_seconds + 5, lambda: None)
            # consumeErrors: the bound's CancelledError below is expected, not an
            # "Unhandled error in Deferred" for the log.
            all_jobs: Deferred[Any] = DeferredList(jobs)
            await DeferredList([all_jobs, bound], fireOnOneCallback=True, consumeErrors=True)
            bound.cancel()
        # Jobs still running past the bound keep their messages invisible
        # until the visibility timeout; they come back to another worker.

    # -- the loop ----------------------------------------------------------------

    async def _receive_loop(self) -> None:
        failures = 0
        while self.running_loop:
            free = self.concurrency - len(self.in_flight)
            if free <= 0:
                self._slot_free = Deferred()
                await self._slot_free
                self._slot_free = None
                continue
            try:
                self._receiving = self.drivers.queue.receive(
                    max_messages=min(free, 10), wait=self.settings.worker.poll_wait
                )
                messages = await self._receiving
                failures = 0
            except Exception as e:
                if not self.running_loop:
                    return
                failures += 1
                delay = min(30.0, 0.5 * 2 ** min(failures, 6))
                self.log.warn(
                    "receive failed ({error}); retrying in {delay}s", error=str(e), delay=delay
                )
                await deferLater(self.clock, delay, lambda: None)
                continue
            finally:
                self._receiving = None
            for message in messages:
                self._start(message)

    def _start(self, message: Message) -> None:
        key = message.handle
        d = ensureDeferred(self.run_job(message))
        self.in_flight[key] = d

        def done(result: object) -> object:
            self.in_flight.pop(key, None)
            if self._slot_free is not None and not self._slot_free.called:
                self._slot_free.callback(None)
            return result

        d.addBoth(done)
        d.addErrback(lambda f: self.log.failure("job {body} crashed", f, body=message.body))

    async def _record_stats(self) -> None:
        try:
            self.metrics.record_queue_stats(await self.drivers.queue.stats())
        except Exception as e:
            self.log.debug("queue stats unavailable: {error}", error=str(e))

    # -- one job -----------------------------------------------------------------

    async def run_job(self, message: Message) -> None:
        """Process one delivery to its end: ack, or release for a retry."""
        started = time.monotonic()
        image_id = message.body
        lag = max(0.0, self.clock.seconds() - message.sent_at)
        if message.receive_count <= 1:  # a redelivery also waited out its retry delay
            self.metrics.queue_lag.observe(lag)
        #: Structured fields of this job's log line, filled in as it goes.
        job: dict[str, Any] = {"queue_lag_ms": round(lag * 1000)}
        if not is_valid_id(image_id):
            self.log.warn(
                "dropping a message that is not an image id: {body!r}", body=image_id[:80]
            )
            await self.drivers.queue.ack(message)
            return
        keeper = _VisibilityKeeper(self.drivers.queue, message, self.visibility, self.clock)
        try:
            outcome, detail = await self._process(image_id, message, job)
        except Exception as e:
            keeper.stop()
            await self._retry_later(keeper.message, image_id, e, started, job)
            return
        keeper.stop()
        try:
            await self.drivers.queue.ack(keeper.message)
        except Exception as e:
            # The work is done and idempotent: a second delivery will see it.
            self.log.warn("could not ack {id}: {error}", id=image_id, error=str(e))
        elapsed = time.monotonic() - started
        self.metrics.job_seconds.observe(elapsed)
        if outcome == "failed":
            job["reason"] = detail
        elif detail:
            job["detail"] = detail
        self.log.info(
            "job {id} {outcome}"
            + (" ({reason})" if "reason" in job else "")
            + " in {duration_ms} ms (attempt {attempt})",
            id=image_id,
            outcome=outcome,
            duration_ms=round(elapsed * 1000),
            attempt=message.receive_count,
            **job,
        )

    async def _process(
        self, image_id: str, message: Message, job: dict[str, Any] | None = None
    ) -> tuple[str, str]:
        """Do the work; return (outcome, detail). Raises on transient errors.

        ``job`` collects fields for the log line: the source format, crunch
        time and a failure's detail.
        """
        job = {} if job is None else job
        public, private = self.drivers.public, self.drivers.private
        original = await private.head(self.layout.original(image_id))
        if original is None:
            # Deleted. A worker that died between publishing and noticing the
            # delete may have left variants: take them back, so nothing of a
            # deleted image stays served.
            await unpublish(self.drivers, self.layout, image_id)
            return "gone", "original deleted before it was crunched"
        if await public.head(self.layout.variant(image_id)) is not None:
            return "already-ready", ""
        workdir = tempfile.mkdtemp(prefix=f"profiled-{image_id[:8]}-")
        try:
            src = os.path.join(workdir, "original")
            with open(src, "wb") as f:
                await download(private, self.layout.original(image_id), f)
            t0 = time.monotonic()
            try:
                result = await self.pool.crunch(src, workdir, self.spec)
            except PoolStopped:
                raise
            except CrunchFailed as failed:
                last = message.receive_count >= self.settings.worker.max_attempts
                if failed.reason in RETRIED_REASONS and not last:
                    raise
                job["crunch_ms"] = round((time.monotonic() - t0) * 1000)
                job["detail"] = failed.detail[:200]
                await self._fail(image_id, failed.reason, failed.detail, message.receive_count)
                return "failed", failed.reason
            crunched = time.monotonic() - t0
            self.metrics.crunch_seconds.labels(result.source_format).observe(crunched)
            job["crunch_ms"] = round(crunched * 1000)
            job["source_format"] = result.source_format
            await self._publish(image_id, result)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        if await private.head(self.layout.original(image_id)) is None:
            # Deleted while we worked: take back what we just published.
            await unpublish(self.drivers, self.layout, image_id)
            return "gone", "deleted while being crunched"
        await private.delete(self.layout.failure(image_id))  # from an earlier parked try
        self.metrics.images_ready.inc()
        return "ready", ""

    async def _publish(self, image_id: str, result: CrunchResult) -> None:
        """Write the variants, the default one last (its presence means ready)."""
        by_name = {v.name: v for v in result.variants}
        for name in self.layout.variant_names():
            variant = by_name[name]
            with open(variant.path, "rb") as f:
                await self.drivers.public.put(
                    self.layout.variant(image_id, name),
                    f,
                    variant.size,
                    variant.content_type,
                    cache_control=IMMUTABLE,
                )

    async def _fail(self, image_id: str, reason: str, detail: str, attempts: int) -> None:
        record = failure_record(reason, detail, attempts)
        await self.drivers.private.put(
            self.layout.failure(image_id), io.BytesIO(record), len(record), "application/json"
        )
        self.metrics.failures.labels(reason).inc()

    async def _retry_later(
        self,
        message: Message,
        image_id: str,
        error: Exception,
        started: float | None = None,
        job: dict[str, Any] | None = None,
    ) -> None:
        if isinstance(error, PoolStopped):
            self.log.info("job {id} released: the worker is stopping", id=image_id)
            await self._release(message, image_id, 0)
            return
        reason = error.reason if isinstance(error, CrunchFailed) else type(error).__name__
        last = message.receive_count >= self.settings.worker.max_attempts
        self.log.warn(
            "job {id} attempt {attempt} hit {reason}: {error}"
            + ("; giving up, parking it" if last else "; will retry"),
            id=image_id,
            outcome="dead_lettered" if last else "retry",
            attempt=message.receive_count,
            reason=reason,
            error=str(error),
            duration_ms=None if started is None else round((time.monotonic() - started) * 1000),
            **(job or {}),
        )
        self.metrics.retries.labels(reason).inc()
        if last:
            self.metrics.dead_lettered.inc()
            try:
                await self._fail(
                    image_id,
                    error.reason if isinstance(error, CrunchFailed) else "unavailable",
                    f"gave up after {message.receive_count} attempts: {error}",
                    message.receive_count,
                )
            except Exception as e:
                self.log.warn(
                    "could not record the failure of {id}: {error}", id=image_id, error=str(e)
                )
        delay = min(
            MAX_RETRY_DELAY, self.settings.worker.retry_delay * 2 ** (message.receive_count - 1)
        )
        await self._release(message, image_id, 0 if last else delay)

    async def _release(self, message: Message, image_id: str, delay: float) -> None:
        try:
            await self.drivers.queue.release(message, delay=delay)
        except Exception as e:
            # It comes back by itself after the visibility timeout.
            self.log.warn("could not release {id}: {error}", id=image_id, error=str(e))


class _VisibilityKeeper:
    """Extends a message's visibility while its job runs."""

    def __init__(self, queue: Any, message: Message, timeout: int, clock: IReactorTime):
        self.queue, self.message, self.timeout, self.clock = queue, message, timeout, clock
        self._call: IDelayedCall | None = clock.callLater(timeout / 3, self._extend)

    def _extend(self) -> None:
        self._call = None
        d = self.queue.extend(self.message, self.timeout)

        def extended(message: Message) -> None:
            self.message = message
            if self._running:
                self._call = self.clock.callLater(self.timeout / 3, self._extend)

        def lost(f: Any) -> None:
            f.trap(LostClaim, Exception)
            if self._running:
                self._call = self.clock.callLater(self.timeout / 3, self._extend)

        d.addCallbacks(extended, lost)

    _running = True

    def stop(self) -> None:
        self._running = False
        if self._call is not None and self._call.active():
            self._call.cancel()
