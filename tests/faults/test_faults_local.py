"""Faults with the local driver, against real twistd processes: every 202 still ends.

A store or the queue is broken by replacing its ``tmp/`` directory with a
file (every write then fails with ENOTDIR, as on a full or read-only disk,
and even for root, whom permissions do not stop); a worker or crunch child
is killed with a signal; a web or proxy process is restarted under load.
Each test counts: every upload that got a 202 ends ready or failed with a
reason within the bounded retry time, none is lost.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

from tests import images
from tests.e2e.harness import Twistd, running, separate_roles, upload, wait_until
from tests.faults.chaos import Tally, crunch_children, kill

pytestmark = pytest.mark.e2e

FAST = {
    "PROFILED_WORKER_POLL_WAIT": "0.5",
    "PROFILED_WORKER_CONCURRENCY": "2",
    "PROFILED_WORKER_RETRY_DELAY": "0.3",
    "PROFILED_WORKER_VISIBILITY_TIMEOUT": "3",
    "PROFILED_WORKER_MAX_ATTEMPTS": "8",
}


def status_of(server: Twistd):
    def get(image_id: str) -> dict[str, Any] | None:
        r = server.get(f"/v1/images/{image_id}")
        return r.json() if r.status_code == 200 else None

    return get


@contextmanager
def broken(directory: Path):
    """Replace ``directory`` (a store's or the queue's tmp/) with a file, then put it back."""
    shutil.rmtree(directory)
    directory.write_bytes(b"not a directory")
    try:
        yield
    finally:
        directory.unlink()
        directory.mkdir(mode=0o750)


def originals(var: Path) -> list[Path]:
    return list((var / "private" / "objects").rglob("originals*.meta"))


def queued(var: Path) -> list[Path]:
    return [p for d in ("new", "claimed") for p in (var / "queue" / d).iterdir()]


def upload_many(server: Twistd, tally: Tally, n: int, data: bytes | None = None) -> None:
    for _ in range(n):
        try:
            r = upload(server, data or images.jpeg((200, 150)), timeout=15)
        except requests.RequestException:
            tally.record(None)
            continue
        tally.record(r.status_code, r.json().get("id") if r.status_code == 202 else None)


def test_private_store_down_is_503_and_leaves_nothing(tmp_path: Path):
    """Uploads while the private store fails: 503 + Retry-After, nothing stored or queued."""
    var = tmp_path / "var"
    server = Twistd(["--role=all", f"--data-dir={var}"], tmp_path, FAST)
    tally = Tally()
    with running(server):
        with broken(var / "private" / "tmp"):
            for _ in range(3):
                r = upload(server, images.jpeg())
                assert r.status_code == 503, r.text
                assert r.json()["errno"] == 201 and r.headers["Retry-After"]
            assert server.get("/__heartbeat__").status_code == 503
        assert originals(var) == [] and queued(var) == []
        upload_many(server, tally, 3)
        tally.settle(status_of(server), 30)
    tally.assert_none_lost(want=("ready",))
    assert len(tally.accepted) == 3


def test_queue_down_after_store_is_503_without_orphan(tmp_path: Path):
    """The queue fails after the original is stored: retried, then 503 and the original removed."""
    var = tmp_path / "var"
    server = Twistd(["--role=all", f"--data-dir={var}"], tmp_path, FAST)
    tally = Tally()
    with running(server):
        with broken(var / "queue" / "tmp"):
            started = time.monotonic()
            r = upload(server, images.jpeg())
            assert r.status_code == 503, r.text
            assert r.json()["errno"] == 201
            assert time.monotonic() - started > 0.5  # the enqueue was retried first
        assert originals(var) == [] and queued(var) == []
        upload_many(server, tally, 3)
        tally.settle(status_of(server), 30)
    tally.assert_none_lost(want=("ready",))


def test_public_store_failing_then_back_every_image_ends_ready(tmp_path: Path):
    """Variants cannot be written for a while: jobs are retried, and end ready once it is back."""
    var = tmp_path / "var"
    server = Twistd(["--role=all", f"--data-dir={var}"], tmp_path, FAST)
    tally = Tally()
    with running(server):
        with broken(var / "public" / "tmp"):
            upload_many(server, tally, 6)
            assert len(tally.accepted) == 6
            time.sleep(2)  # several attempts fail meanwhile
            pending = [status_of(server)(i)["status"] for i in tally.accepted]
            assert pending == ["pending"] * 6
        tally.settle(status_of(server), 40)
        assert server.get("/__heartbeat__").status_code == 200
    tally.assert_none_lost(want=("ready",))
    assert "retry" in server.log_path.read_text()


def test_crunch_child_segfault_and_oom_kill_the_worker_goes_on(tmp_path: Path):
    """A crunch child dying by SIGSEGV or SIGKILL mid-job: the job ends, the worker goes on."""
    var = tmp_path / "var"
    env = {
        **FAST,
        "PROFILED_WORKER_CONCURRENCY": "1",
        "PROFILED_WORKER_MAX_ATTEMPTS": "2",
        "PROFILED_CRUNCH_TEST_HOOKS": "1",
        "PROFILED_CRUNCH_TEST_DELAY": "2",
    }
    server = Twistd(["--role=all", f"--data-dir={var}"], tmp_path, env)
    tally = Tally()
    killed = []
    with running(server):
        assert server.proc is not None
        for sig in (signal.SIGSEGV, signal.SIGKILL, signal.SIGSEGV, signal.SIGKILL):
            upload_many(server, tally, 1)
            wait_until(lambda: list((var / "queue" / "claimed").iterdir()), 20, what="a claim")
            [child] = wait_until(lambda: crunch_children(server.proc.pid), 10, what="a child")
            time.sleep(0.5)  # inside the job's delay
            kill(child, sig)
            killed.append(child)
            wait_until(lambda c=child: c not in crunch_children(server.proc.pid), 10)
        tally.settle(status_of(server), 60)
        upload_many(server, tally, 1)
        tally.settle(status_of(server), 30)
        assert server.get("/__heartbeat__").status_code == 200
        assert len(set(crunch_children(server.proc.pid)) & set(killed)) == 0
    tally.assert_none_lost()
    # A segfault is retried (the next try goes ready); a SIGKILL the pool did not send
    # is the OOM killer's mark: failed, out_of_memory.
    reasons = sorted(s.get("error", "ready") for s in tally.outcomes.values())
    assert reasons.count("out_of_memory") == 2, reasons
    assert tally.outcomes[tally.accepted[-1]]["status"] == "ready"


def test_worker_sigkilled_mid_crunch_loses_nothing(tmp_path: Path):
    """A worker SIGKILLed with jobs in flight: a new worker finishes every accepted upload."""
    var = tmp_path / "var"
    data = f"--data-dir={var}"
    web = Twistd(["--role=web", data], tmp_path, name="web")
    slow = Twistd(
        ["--role=worker", data],
        tmp_path,
        name="slow-worker",
        env={**FAST, "PROFILED_CRUNCH_TEST_HOOKS": "1", "PROFILED_CRUNCH_TEST_DELAY": "30"},
    )
    tally = Tally()
    with running(web, slow):
        upload_many(web, tally, 8)
        wait_until(lambda: len(list((var / "queue" / "claimed").iterdir())) == 2, 20)
        assert slow.proc is not None
        os.killpg(slow.proc.pid, signal.SIGKILL)
        slow.proc.wait(10)
        fresh = Twistd(["--role=worker", data], tmp_path, FAST, name="fresh-worker")
        with running(fresh):
            tally.settle(status_of(web), 60)
    assert len(tally.accepted) == 8
    tally.assert_none_lost(want=("ready",))


def test_web_and_proxy_restart_under_load(tmp_path: Path):
    """Uploads and downloads keep coming while web and proxy restart: no 202 is lost."""
    var = tmp_path / "var"
    proxy, web, worker = separate_roles(tmp_path, var, FAST)
    tally = Tally()
    stop = threading.Event()
    served: list[int] = []

    def load() -> None:
        deadline = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < deadline:
            upload_many(web, tally, 1)
            if tally.accepted:
                try:
                    served.append(
                        requests.get(f"{proxy.url}/a/{tally.accepted[0]}", timeout=5).status_code
                    )
                except requests.RequestException:
                    served.append(0)

    with running(proxy, web, worker):
        upload_many(web, tally, 1)
        wait_until(lambda: status_of(web)(tally.accepted[0])["status"] == "ready", 30)
        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            time.sleep(1.5)
            for p in (web, proxy):
                assert p.stop() in (0, -signal.SIGTERM)  # twistd re-raises SIGTERM
                p.start()
                time.sleep(1.5)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        tally.settle(status_of(web), 60)
        # After the restarts, everything is served again.
        for image_id in tally.accepted:
            assert requests.get(f"{proxy.url}/a/{image_id}", timeout=5).status_code == 200
    tally.assert_none_lost(want=("ready",))
    assert len(tally.accepted) > 10
    assert 200 in served
    assert set(tally.refused) <= {503}, tally.refused  # a stopping web head may say 503
