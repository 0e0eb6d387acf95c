"""CrunchPool with real child processes: results, limits, crashes, recycling and stopping."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import globalLogPublisher

from profiled.crunch.child import TEST_DELAY_ENV, TEST_HOOK_MAGIC, TEST_HOOKS_ENV
from profiled.crunch.pipeline import CrunchFailed, CrunchResult, CrunchSpec
from profiled.crunch.pool import CrunchPool, PoolStopped
from tests import images

MiB = 1024 * 1024


@pytest.fixture(autouse=True)
def _hooks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let the children obey test hook files (the pool passes the variable on)."""
    monkeypatch.setenv(TEST_HOOKS_ENV, "1")


class Harness:
    """A pool plus a scratch directory and a record of its events."""

    def __init__(self, tmp_path: Path, **kwargs: Any) -> None:
        self.tmp = tmp_path
        self.events: list[tuple[str, dict[str, Any]]] = []
        options: dict[str, Any] = {"size": 1, "memory_limit": 512 * MiB, "time_limit": 10.0}
        options.update(kwargs)
        self.pool = CrunchPool(reactor, on_event=lambda n, f: self.events.append((n, f)), **options)
        self.count = 0

    def file(self, data: bytes) -> tuple[str, str]:
        """Write a source file and make an output directory for it."""
        self.count += 1
        work = self.tmp / f"job{self.count}"
        (work / "out").mkdir(parents=True)
        (work / "src").write_bytes(data)
        return str(work / "src"), str(work / "out")

    def crunch(self, data: bytes, spec: CrunchSpec | None = None) -> Deferred[CrunchResult]:
        """Crunch bytes through the pool, with a safety timeout."""
        src, out = self.file(data)
        d = self.pool.crunch(src, out, spec or CrunchSpec())
        return d.addTimeout(30, reactor)

    async def fails(self, data: bytes, spec: CrunchSpec | None = None) -> CrunchFailed:
        """Crunch what must fail, and return the failure."""
        with pytest.raises(CrunchFailed) as info:
            await self.crunch(data, spec)
        return info.value

    def pids(self) -> list[int]:
        """Pids of the children started so far."""
        return [f["pid"] for n, f in self.events if n == "child_started"]

    async def ready(self) -> None:
        """Wait until every child has said it is ready."""
        deadline = time.monotonic() + 20
        while sum(1 for c in self.pool._children if c.state == "idle") < self.pool.size:
            assert time.monotonic() < deadline, "children did not start"
            await sleep(0.02)


def hook(command: str) -> bytes:
    """A test hook file: the child obeys it instead of crunching."""
    return TEST_HOOK_MAGIC + command.encode() + b"\n"


def sleep(seconds: float) -> Deferred[None]:
    """Wait on the reactor."""
    d: Deferred[None] = Deferred()
    reactor.callLater(seconds, d.callback, None)  # type: ignore[attr-defined]
    return d


def alive(pid: int) -> bool:
    """Whether a process with this pid exists (and is not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Any]:
    """Make started pools, and stop them all after the test."""
    made: list[Harness] = []

    def make(**kwargs: Any) -> Harness:
        h = Harness(tmp_path, **kwargs)
        h.pool.startService()
        made.append(h)
        return h

    yield make
    for h in made:
        if h.pool.running:
            pytest_twisted.blockon(h.pool.stopService())


@pytest_twisted.ensureDeferred
async def test_job_runs_in_a_child(harness) -> None:  # type: ignore[no-untyped-def]
    """An image crunched through the pool gives the variants, made in another process."""
    h = harness()
    result = await h.crunch(images.jpeg((640, 480)))
    assert result.source_format == "jpeg"
    assert {v.name: (v.width, v.height) for v in result.variants} == {
        "default": (200, 150),
        "small": (100, 75),
        "large": (600, 450),
    }
    assert all(os.path.getsize(v.path) == v.size for v in result.variants)
    assert h.pids() and h.pids()[0] != os.getpid()


@pytest_twisted.ensureDeferred
async def test_image_failures_come_back_as_reasons(harness) -> None:  # type: ignore[no-untyped-def]
    """A bad image fails with its reason and the child stays (no restart)."""
    h = harness()
    assert (await h.fails(images.svg())).reason == "unsupported"
    assert (await h.fails(images.declared_png())).reason == "too_many_pixels"
    assert h.pool.restarts == 0 and len(h.pids()) == 1


@pytest_twisted.ensureDeferred
async def test_child_is_isolated(harness) -> None:  # type: ignore[no-untyped-def]
    """A child has its memory limit, a minimal environment, and none of our sockets."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    try:
        h = harness(memory_limit=300 * MiB)
        await h.ready()
        (pid,) = h.pids()
        limits = Path(f"/proc/{pid}/limits").read_text()
        assert f"Max address space         {300 * MiB}" in limits
        assert "Max core file size        0" in limits
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        names = {e.split(b"=", 1)[0] for e in environ if e}
        assert names <= {
            b"PATH",
            b"LANG",
            b"PYTHONPATH",
            b"PYTHONDONTWRITEBYTECODE",
            b"MALLOC_ARENA_MAX",
            TEST_HOOKS_ENV.encode(),
            TEST_DELAY_ENV.encode(),
        }
        fds = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        assert not [fd for fd in fds if fd.startswith("socket:")]
        assert len(fds) <= 5
    finally:
        listener.close()


@pytest_twisted.ensureDeferred
async def test_memory_bomb_is_out_of_memory_and_pool_goes_on(harness) -> None:  # type: ignore[no-untyped-def]
    """A PNG that decodes to more than the memory limit fails out_of_memory; the next job works."""
    h = harness(memory_limit=128 * MiB)
    failure = await h.fails(images.memory_bomb_png(6000, 6000))
    assert failure.reason == "out_of_memory"
    result = await h.crunch(images.jpeg())
    assert result.variants
    assert h.pool.restarts == 1
    assert ("child_restart", {"pid": h.pids()[0], "reason": "out_of_memory"}) in h.events


@pytest_twisted.ensureDeferred
async def test_allocation_over_the_limit_is_out_of_memory(harness) -> None:  # type: ignore[no-untyped-def]
    """Any allocation past RLIMIT_AS in a child is out_of_memory, and the child is replaced."""
    h = harness(memory_limit=200 * MiB)
    assert (await h.fails(hook(f"alloc {400 * MiB}"))).reason == "out_of_memory"
    assert (await h.crunch(images.gif())).variants
    assert len(h.pids()) == 2


@pytest_twisted.ensureDeferred
async def test_time_limit_kills_and_pool_goes_on(harness) -> None:  # type: ignore[no-untyped-def]
    """A job over the time limit fails as timeout, quickly, and the next job works."""
    h = harness(time_limit=1.0)
    started = time.monotonic()
    assert (await h.fails(hook("sleep 60"))).reason == "timeout"
    assert time.monotonic() - started < 5
    assert (await h.crunch(images.png16())).variants
    assert h.pool.restarts == 1
    assert not alive(h.pids()[0])


@pytest.mark.parametrize(
    ("signal_name", "reason"), [("SIGSEGV", "crashed"), ("SIGKILL", "out_of_memory")]
)
@pytest_twisted.ensureDeferred
async def test_child_killed_by_a_signal_is_replaced(harness, signal_name: str, reason: str) -> None:  # type: ignore[no-untyped-def]
    """A child dying by a signal mid-job fails the job (SIGKILL that we did not send
    reads as the OOM killer) and is replaced."""
    h = harness()
    assert (await h.fails(hook(f"signal {signal_name}"))).reason == reason
    assert (await h.crunch(images.webp_lossy())).variants
    assert h.pool.restarts == 1
    assert ("child_restart", {"pid": h.pids()[0], "reason": reason}) in h.events


@pytest_twisted.ensureDeferred
async def test_child_exiting_mid_job_is_crashed(harness) -> None:  # type: ignore[no-untyped-def]
    """A child that exits without replying fails the job as crashed."""
    h = harness()
    failure = await h.fails(hook("exit 7"))
    assert failure.reason == "crashed" and "status 7" in failure.detail
    assert (await h.crunch(images.jpeg())).variants


@pytest_twisted.ensureDeferred
async def test_children_are_recycled(harness) -> None:  # type: ignore[no-untyped-def]
    """After max_jobs_per_child images a child is replaced, which is not a restart."""
    h = harness(max_jobs_per_child=2)
    for _ in range(5):
        await h.crunch(images.jpeg((32, 32)))
    await h.ready()
    assert h.pool.recycled == 2 and h.pool.restarts == 0
    assert len(set(h.pids())) == 3
    assert [n for n, _ in h.events].count("child_recycled") == 2


@pytest_twisted.ensureDeferred
async def test_jobs_queue_and_run_in_parallel(harness) -> None:  # type: ignore[no-untyped-def]
    """With two children, four half-second jobs take about a second, and all finish."""
    h = harness(size=2)
    await h.ready()
    started = time.monotonic()
    jobs = [h.crunch(hook("sleep 0.5")) for _ in range(4)]
    for d in jobs:
        with pytest.raises(CrunchFailed):
            await d  # a hook file is not an image: unsupported, once it has slept
    assert 0.9 < time.monotonic() - started < 1.9


@pytest_twisted.ensureDeferred
async def test_stop_waits_for_jobs_in_flight(harness) -> None:  # type: ignore[no-untyped-def]
    """Stopping lets the running job finish, refuses queued and new jobs, and ends every child."""
    h = harness(size=1)
    await h.ready()
    running = h.crunch(hook("sleep 0.5"))
    queued = h.crunch(images.jpeg())
    await sleep(0.1)
    stopped = h.pool.stopService()
    with pytest.raises(PoolStopped):
        await queued
    failure = await fails_with(running)
    assert failure.reason == "unsupported"  # it ran to the end, not killed
    with pytest.raises(PoolStopped):
        await h.crunch(images.jpeg())
    await stopped
    assert not h.pool._children
    assert not any(alive(pid) for pid in h.pids())


async def fails_with(d: Deferred[CrunchResult]) -> CrunchFailed:
    """Await a Deferred that must fail with CrunchFailed."""
    with pytest.raises(CrunchFailed) as info:
        await d
    return info.value


@pytest_twisted.ensureDeferred
async def test_stop_with_idle_children_is_quick(harness) -> None:  # type: ignore[no-untyped-def]
    """Stopping an idle pool ends its children at once and leaves none behind."""
    h = harness(size=2)
    await h.ready()
    started = time.monotonic()
    await h.pool.stopService()
    assert time.monotonic() - started < 2
    assert not any(alive(pid) for pid in h.pids())


@pytest_twisted.ensureDeferred
async def test_cancel_kills_the_job(harness) -> None:  # type: ignore[no-untyped-def]
    """Cancelling a running job kills its child; cancelling a queued one just drops it."""
    h = harness(size=1)
    await h.ready()
    running = h.crunch(hook("sleep 60"))
    queued = h.crunch(images.jpeg())
    await sleep(0.2)
    queued.cancel()
    running.cancel()
    for d in (queued, running):
        with pytest.raises(CancelledError):
            await d
    assert (await h.crunch(images.jpeg())).variants
    assert h.pool.restarts == 1


@pytest_twisted.ensureDeferred
async def test_child_stderr_is_logged(harness) -> None:  # type: ignore[no-untyped-def]
    """What a child writes to stderr reaches the log, line by line, marked with its pid."""
    seen: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(seen.append)
    try:
        h = harness()
        await h.fails(hook("stderr decoder-says-hello"))
    finally:
        globalLogPublisher.removeObserver(seen.append)
    lines = [e.get("line") for e in seen if e.get("log_format", "").startswith("crunch child")]
    assert "decoder-says-hello" in lines


@pytest_twisted.ensureDeferred
async def test_child_that_cannot_start_fails_jobs(harness) -> None:  # type: ignore[no-untyped-def]
    """A child that dies before it is ready fails the waiting jobs instead of hanging them."""
    h = harness(memory_limit=8 * MiB)  # too small for Python itself
    failure = await h.fails(images.jpeg())
    assert failure.reason == "crashed"
    assert h.pool.restarts >= 1


@pytest_twisted.ensureDeferred
async def test_inline_pool_runs_in_process(harness) -> None:  # type: ignore[no-untyped-def]
    """Size 0 crunches in the calling process and fails with CrunchFailed."""
    h = harness(size=0)
    assert (await h.crunch(images.jpeg())).variants
    assert (await h.fails(images.svg())).reason == "unsupported"
    assert h.pids() == []


@pytest_twisted.ensureDeferred
async def test_hooks_need_the_variable(harness, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """Without the test variable a hook file is just an unsupported upload."""
    monkeypatch.delenv(TEST_HOOKS_ENV)
    h = harness()
    assert (await h.fails(hook("signal SIGKILL"))).reason == "unsupported"
    assert h.pool.restarts == 0
