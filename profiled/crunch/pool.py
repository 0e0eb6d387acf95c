"""The crunch pool: child processes that run the pipeline, under limits, for the worker.

A decoder that crashes, hangs or is fed a bomb must cost one child process,
never the worker: each child limits its own memory (``RLIMIT_AS``), and the
pool kills a child that takes longer than ``time_limit`` on one image. Either
way the image fails with a reason, a new child takes the dead one's place and
the pool goes on.

Why not ampoule: its AMP boxes would carry the same small JSON messages; what
matters here is the process handling (limits set before any decoder loads,
SIGKILL on time-out, telling a crash from the OOM killer, recycling, a clean
stop), and that is simpler to get exactly right with ``spawnProcess`` and a
line protocol than through a general RPC pool. See ``child`` for the protocol.

Size 0 runs ``crunch()`` inline in the calling process, blocking the reactor:
for tests only.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import sys
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet import error, protocol
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorProcess, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from profiled.crunch import child as wire
from profiled.crunch.pipeline import REASONS, CrunchFailed, CrunchResult, CrunchSpec, crunch

#: Longest line a child may write (a reply is a few hundred bytes).
_MAX_REPLY = 1024 * 1024

#: Seconds a child gets to exit after its stdin is closed, before SIGKILL.
_EXIT_GRACE = 5.0

#: Longest wait before trying again to start a child that would not start.
_MAX_START_DELAY = 30.0

# Where the profiled package lives, so that a child imports the same code.
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


class PoolStopped(CrunchFailed):
    """The pool stopped before the job could run: nothing is wrong with the image.

    A ``CrunchFailed`` (reason ``crashed``) so that callers need handle one
    exception type; callers that care can tell it apart and release the job.
    """

    def __init__(self) -> None:
        super().__init__("crashed", "the crunch pool is stopping")


class _Job:
    """One image on its way through the pool."""

    def __init__(self, job_id: int, message: dict[str, Any], deferred: Deferred[Any]) -> None:
        self.id = job_id
        self.message = message
        self.deferred = deferred
        self.child: _Child | None = None

    def finish(self, outcome: Any) -> None:
        """Fire the caller's Deferred, unless it was cancelled already."""
        if not self.deferred.called:
            if isinstance(outcome, BaseException):
                self.deferred.errback(Failure(outcome))  # type: ignore[no-untyped-call]
            else:
                self.deferred.callback(outcome)


class _Child(protocol.ProcessProtocol):
    """The pool's end of one child process."""

    def __init__(self, pool: CrunchPool) -> None:
        self.pool = pool
        self.pid: int | None = None
        #: starting -> idle <-> busy -> retiring -> dead
        self.state = "starting"
        self.job: _Job | None = None
        self.jobs_done = 0
        #: Why the pool killed it, if it did: "timeout", "cancel", "protocol", "stop".
        self.killed_for: str | None = None
        #: Why it is retiring: "recycle", "out_of_memory" or "stop".
        self.retiring_for: str | None = None
        self.timer: IDelayedCall | None = None
        self._out = b""
        self._err = b""

    # ProcessProtocol

    def connectionMade(self) -> None:
        self.pid = self.transport.pid  # type: ignore[union-attr]

    def outReceived(self, data: bytes) -> None:
        self._out += data
        while b"\n" in self._out:
            line, self._out = self._out.split(b"\n", 1)
            self.pool._on_line(self, line)
        if len(self._out) > _MAX_REPLY:
            self._out = b""
            self.pool._log.error("crunch child {pid}: reply too long", pid=self.pid)
            self.kill("protocol")

    def errReceived(self, data: bytes) -> None:
        self._err += data
        lines = self._err.split(b"\n")
        self._err = lines.pop()
        if len(self._err) > 4096:
            lines.append(self._err)
            self._err = b""
        for line in lines:
            self.pool._log_stderr(self, line)

    def processEnded(self, reason: Failure) -> None:
        if self._err:
            self.pool._log_stderr(self, self._err)
            self._err = b""
        self.pool._on_exit(self, reason.value or Exception("ended"))

    # Control

    def send(self, job: _Job) -> None:
        self.state = "busy"
        self.job = job
        job.child = self
        line = json.dumps(job.message, separators=(",", ":")).encode() + b"\n"
        self.transport.write(line)  # type: ignore[union-attr]
        self.timer = self.pool._clock.callLater(self.pool.time_limit, self.kill, "timeout")

    def kill(self, why: str) -> None:
        """SIGKILL the child; the job, if any, fails when its exit is seen."""
        if self.killed_for is None:
            self.killed_for = why
        try:
            self.transport.signalProcess("KILL")  # type: ignore[union-attr]
        except error.ProcessExitedAlready:
            pass

    def retire(self, why: str) -> None:
        """Close stdin so the child exits when idle; kill it if it dawdles."""
        if self.state in ("retiring", "dead"):
            return
        self.state = "retiring"
        self.retiring_for = why
        self.transport.closeStdin()  # type: ignore[union-attr]
        self._cancel_timer()
        self.timer = self.pool._clock.callLater(_EXIT_GRACE, self.kill, "stop")

    def _cancel_timer(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None


class CrunchPool(Service):
    """Child processes that crunch images, with per-image memory and time limits.

    ``on_event(name, fields)`` is told ``child_started`` ({"pid"}),
    ``child_restart`` ({"pid", "reason"}: a child died or was killed and was
    replaced) and ``child_recycled`` ({"pid", "jobs"}: a planned replacement
    after ``max_jobs_per_child`` images), for metrics and logs.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        size: int,
        memory_limit: int,
        time_limit: float,
        max_jobs_per_child: int = 500,
        python: str = sys.executable,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        if size < 0 or memory_limit <= 0 or time_limit <= 0 or max_jobs_per_child < 1:
            raise ValueError("CrunchPool: size >= 0, limits > 0, max_jobs_per_child >= 1")
        self._reactor: IReactorProcess = reactor
        self._clock: IReactorTime = reactor
        self.size = size
        self.memory_limit = memory_limit
        self.time_limit = time_limit
        self.max_jobs_per_child = max_jobs_per_child
        self.python = python
        self.on_event = on_event
        #: Children replaced because they died or were killed (not recycling).
        self.restarts = 0
        #: Children replaced as planned after ``max_jobs_per_child`` images.
        self.recycled = 0
        self._children: list[_Child] = []
        self._queue: deque[_Job] = deque()
        self._ids = itertools.count(1)
        self._stopping = False
        self._stop_waiters: list[Deferred[None]] = []
        self._start_failures = 0
        self._start_call: IDelayedCall | None = None

    # The API

    def crunch(self, src_path: str, out_dir: str, spec: CrunchSpec) -> Deferred[CrunchResult]:
        """Crunch one image in a child; fails with ``CrunchFailed`` only.

        Queues when every child is busy. Cancelling the Deferred drops a
        queued job, or kills the child working on it.
        """
        if self.size == 0:
            try:
                return succeed(crunch(src_path, out_dir, spec))
            except CrunchFailed as e:
                return fail(e)
        if self._stopping:
            return fail(PoolStopped())
        job_id = next(self._ids)
        message = {
            "id": job_id,
            "src": os.path.abspath(src_path),
            "out": os.path.abspath(out_dir),
            "spec": wire.spec_to_wire(spec),
        }
        job = _Job(job_id, message, Deferred(lambda d: self._cancel(job)))
        self._queue.append(job)
        self._dispatch()
        return job.deferred.addCallback(_result)

    def startService(self) -> None:
        super().startService()
        self._stopping = False
        self._maintain()

    def stopService(self) -> Deferred[None]:
        """Refuse new work, let jobs in flight finish (each within its time limit), then
        end the children; the Deferred fires when every child is gone."""
        super().stopService()
        self._stopping = True
        if self._start_call is not None and self._start_call.active():
            self._start_call.cancel()
        while self._queue:
            self._queue.popleft().finish(PoolStopped())
        d: Deferred[None] = Deferred()
        self._stop_waiters.append(d)
        self._wind_down()
        return d

    # Inside

    def _dispatch(self) -> None:
        for child in self._children:
            if not self._queue:
                return
            if child.state == "idle":
                child.send(self._queue.popleft())

    def _maintain(self) -> None:
        """Start children until ``size`` of them are (or are becoming) available."""
        if self._stopping or not self.running or self.size == 0:
            return
        live = [c for c in self._children if c.state in ("starting", "idle", "busy")]
        for _ in range(self.size - len(live)):
            self._spawn()

    def _spawn(self) -> None:
        child = _Child(self)
        env = {
            "PATH": "/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "PYTHONPATH": _PACKAGE_ROOT,
            "PYTHONDONTWRITEBYTECODE": "1",
            "MALLOC_ARENA_MAX": "2",
        }
        if os.environ.get(wire.TEST_HOOKS_ENV) == "1":
            env[wire.TEST_HOOKS_ENV] = "1"
            env[wire.TEST_DELAY_ENV] = os.environ.get(wire.TEST_DELAY_ENV, "0")
        args = [
            self.python,
            "-P",  # the working directory is not an import path
            "-X",
            "faulthandler",  # a crash leaves a Python traceback on stderr
            "-m",
            "profiled.crunch.child",
            f"--memory-limit={self.memory_limit}",
        ]
        self._reactor.spawnProcess(
            child, self.python, args, env=env, path="/", childFDs={0: "w", 1: "r", 2: "r"}
        )
        self._children.append(child)

    def _on_line(self, child: _Child, line: bytes) -> None:
        try:
            message = json.loads(line)
            if not isinstance(message, dict):
                raise ValueError("not an object")
        except ValueError:
            self._log.error("crunch child {pid}: unreadable reply", pid=child.pid)
            child.kill("protocol")
            return
        if "ready" in message:
            if child.state == "starting":
                child.state = "idle"
                self._start_failures = 0
                self._event("child_started", {"pid": child.pid})
                self._dispatch()
            return
        if child.killed_for is not None:
            return  # a reply that raced the kill: the job fails when the exit is seen
        job = child.job
        if job is None or message.get("id") != job.id or child.state != "busy":
            self._log.error("crunch child {pid}: reply to no job", pid=child.pid)
            child.kill("protocol")
            return
        child._cancel_timer()
        child.job = None
        child.jobs_done += 1
        job.finish(message)
        if message.get("error") == "out_of_memory":
            child.retire("out_of_memory")  # it exits by itself; this bounds the wait
        elif self._stopping:
            child.retire("stop")
        elif child.jobs_done >= self.max_jobs_per_child:
            self.recycled += 1
            self._event("child_recycled", {"pid": child.pid, "jobs": child.jobs_done})
            child.retire("recycle")
            self._maintain()
        else:
            child.state = "idle"
        self._dispatch()

    def _on_exit(self, child: _Child, reason: BaseException) -> None:
        previous = child.state
        child.state = "dead"
        child._cancel_timer()
        self._children.remove(child)
        code = getattr(reason, "exitCode", None)
        sig = getattr(reason, "signal", None)
        why = _describe(code, sig)
        job = child.job
        child.job = None
        restart_reason: str | None = None
        if job is not None:
            failure = self._job_failure(child, sig, why)
            job.finish(failure)
            restart_reason = failure.reason
            self._log.warn(
                "crunch child {pid} {why} during a job: {reason}",
                pid=child.pid,
                why=why,
                reason=failure.reason,
            )
        elif previous == "starting":
            restart_reason = "start_failed"
            self._start_failures += 1
            self._log.error("crunch child {pid} {why} before it was ready", pid=child.pid, why=why)
        elif previous == "retiring":
            if child.retiring_for == "out_of_memory":
                restart_reason = "out_of_memory"
        else:
            restart_reason = "died"
            self._log.warn("crunch child {pid} {why} while idle", pid=child.pid, why=why)
        if self._stopping:
            self._wind_down()
            return
        if restart_reason is not None:
            self.restarts += 1
            self._event("child_restart", {"pid": child.pid, "reason": restart_reason})
        if restart_reason == "start_failed":
            self._start_later()
        else:
            self._maintain()

    def _job_failure(self, child: _Child, sig: int | None, why: str) -> CrunchFailed:
        if child.killed_for == "timeout":
            return CrunchFailed("timeout", f"over the time limit of {self.time_limit:g} s")
        if child.killed_for is not None:
            return CrunchFailed("crashed", f"crunch child killed ({child.killed_for})")
        if sig == signal.SIGKILL:
            # Nobody here sent it: the kernel's OOM killer is the usual sender.
            return CrunchFailed("out_of_memory", "crunch child killed by SIGKILL")
        return CrunchFailed("crashed", f"crunch child {why}")

    def _start_later(self) -> None:
        """Try again to start children, later each time, and fail what waits meanwhile."""
        if not any(c.state in ("starting", "idle", "busy") for c in self._children):
            while self._queue:
                self._queue.popleft().finish(
                    CrunchFailed("crashed", "crunch child failed to start")
                )
        delay = min(_MAX_START_DELAY, 0.5 * 2 ** (self._start_failures - 1))
        if self._start_call is None or not self._start_call.active():
            self._start_call = self._clock.callLater(delay, self._maintain)

    def _cancel(self, job: _Job) -> None:
        if job in self._queue:
            self._queue.remove(job)
        elif job.child is not None and job.child.job is job:
            job.child.kill("cancel")
        # The Deferred then fails with CancelledError.

    def _wind_down(self) -> None:
        """While stopping: retire idle children; fire the waiters once all are gone."""
        for child in list(self._children):
            if child.state in ("starting", "idle"):
                child.retire("stop")
        if not self._children:
            waiters, self._stop_waiters = self._stop_waiters, []
            for d in waiters:
                d.callback(None)

    def _log_stderr(self, child: _Child, line: bytes) -> None:
        text = line.decode("utf-8", "replace").rstrip()
        if text:
            text = "".join(c if c.isprintable() else "?" for c in text[:1000])
            self._log.warn("crunch child {pid}: {line}", pid=child.pid, line=text)

    def _event(self, name: str, fields: dict[str, Any]) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(name, fields)
        except Exception:
            self._log.failure("crunch pool event handler failed on {name}", name=name)


def _result(message: dict[str, Any]) -> CrunchResult:
    """Turn a child's reply into a result, or raise the failure it reports."""
    if "error" in message:
        reason = message["error"]
        if reason not in REASONS:
            raise CrunchFailed("crashed", "crunch child sent an unknown reason")
        raise CrunchFailed(reason, str(message.get("detail", ""))[:200])
    try:
        return wire.result_from_wire(message["result"])
    except (KeyError, TypeError, ValueError):
        raise CrunchFailed("crashed", "crunch child sent a malformed result") from None


def _describe(code: int | None, sig: int | None) -> str:
    if sig is not None:
        try:
            return f"was killed by {signal.Signals(sig).name}"
        except ValueError:
            return f"was killed by signal {sig}"
    return f"exited with status {code}"
