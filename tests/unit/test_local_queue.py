"""LocalQueue beyond the contract: the spool on disk, recovery, dead-letter, two processes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import CancelledError
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase

import profiled
from profiled.drivers.local.queue import LocalQueue
from profiled.errors import LostClaim
from profiled.interfaces import Message
from tests.unit.inline_reactor import InlineReactor as SharedInlineReactor

START = 1_700_000_000.0
NAME = re.compile(r"\d{13}-\d{13}[0-9a-f]{16}-\d+")


class InlineReactor(SharedInlineReactor):
    """The shared inline reactor, its clock at START, so queue logic is tested
    without real time."""

    def __init__(self) -> None:
        super().__init__()
        self.advance(START)


def names(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


class SpoolTests(SynchronousTestCase):
    """The queue's behaviour on a simulated clock."""

    def setUp(self) -> None:
        self.clock = InlineReactor()
        # Not self.mktemp(): that puts its directories in the working directory.
        self.root = Path(tempfile.mkdtemp(prefix="local-queue-")) / "queue"
        self.addCleanup(shutil.rmtree, self.root.parent, True)
        self.queue = self.make()

    def make(self, visibility_timeout: float = 30, max_receives: int = 3) -> LocalQueue:
        return LocalQueue(
            self.root,
            reactor=self.clock,
            visibility_timeout=visibility_timeout,
            max_receives=max_receives,
        )

    def receive(self, queue: LocalQueue | None = None, n: int = 10) -> list[Message]:
        return self.successResultOf((queue or self.queue).receive(max_messages=n, wait=0))

    def send(self, body: str, delay: float = 0) -> None:
        self.successResultOf(self.queue.send(body, delay))

    def test_state_is_in_file_names(self) -> None:
        """send writes new/{visible}-{id}-0; receive renames it to claimed/{deadline}-{id}-1."""
        self.send("job")
        [queued] = names(self.root / "new")
        assert NAME.fullmatch(queued) and queued.endswith("-0")
        assert int(queued[:13]) == int(START * 1000)
        assert names(self.root / "tmp") == []
        [msg] = self.receive()
        assert names(self.root / "new") == []
        assert names(self.root / "claimed") == [msg.handle]
        assert int(msg.handle[:13]) == int((START + 30) * 1000)
        assert msg.handle.endswith("-1") and msg.handle[14:43] == queued[14:43]
        assert json.loads((self.root / "claimed" / msg.handle).read_text()) == {
            "body": "job",
            "sent_at": START,
        }
        self.successResultOf(self.queue.ack(msg))
        self.successResultOf(self.queue.ack(msg))  # idempotent
        assert names(self.root / "claimed") == []

    def test_fresh_instance_recovers_expired_claim(self) -> None:
        """A claim whose worker died is delivered again by a new instance, count incremented."""
        self.send("survivor")
        [first] = self.receive()
        self.clock.advance(29)
        restarted = self.make()
        assert self.receive(restarted) == []  # not expired yet
        self.clock.advance(1)
        restarted = self.make()
        [again] = self.receive(restarted)
        assert again.body == "survivor" and again.receive_count == 2
        assert self.failureResultOf(self.queue.extend(first, 10), LostClaim)
        self.successResultOf(self.queue.ack(first))  # the stale handle changes nothing
        assert names(self.root / "claimed") == [again.handle]
        self.successResultOf(restarted.ack(again))

    def test_expired_claims_are_scanned_at_most_every_second(self) -> None:
        """A running instance looks for expired claims at start, then at most once a second."""
        queue = self.make(visibility_timeout=0.5)
        self.send("m")
        [first] = self.receive(queue)
        self.clock.advance(0.6)
        assert self.receive(queue) == []  # expired, but the last scan was 0.6 s ago
        self.clock.advance(0.4)
        [again] = self.receive(queue)
        assert again.receive_count == 2 and first.handle != again.handle

    def test_extend_moves_the_deadline(self) -> None:
        """extend renames the claim to its new deadline and returns the new handle."""
        self.send("long")
        [msg] = self.receive()
        self.clock.advance(20)
        extended = self.successResultOf(self.queue.extend(msg, 60))
        assert int(extended.handle[:13]) == int((START + 80) * 1000)
        self.clock.advance(40)
        assert self.receive(self.make()) == []
        self.successResultOf(self.queue.ack(extended))
        assert names(self.root / "claimed") == []

    def test_delayed_release(self) -> None:
        """A release with a delay hides the message until exactly then."""
        self.send("later")
        [msg] = self.receive()
        self.successResultOf(self.queue.release(msg, delay=10))
        self.clock.advance(9.9)
        assert self.receive() == []
        self.clock.advance(0.1)
        [again] = self.receive()
        assert again.body == "later" and again.receive_count == 2

    def test_delayed_send_and_order(self) -> None:
        """Messages come out in visible-time order, delayed ones only when due."""
        self.send("late", delay=5)
        self.clock.advance(0.001)
        self.send("first")
        self.clock.advance(0.001)
        self.send("second")
        self.clock.advance(0.001)
        assert [m.body for m in self.receive()] == ["first", "second"]
        self.clock.advance(5)
        assert [m.body for m in self.receive()] == ["late"]

    def test_dead_letter_list_and_redrive(self) -> None:
        """After max_receives deliveries a message is parked, listed, and redriven with count 0."""
        self.send("poison")
        for expected in (1, 2, 3):
            [msg] = self.receive()
            assert msg.receive_count == expected
            self.successResultOf(self.queue.release(msg))
        assert self.receive() == []
        assert names(self.root / "new") == [] and len(names(self.root / "dead")) == 1
        stats = self.successResultOf(self.queue.stats())
        assert (stats.visible, stats.in_flight, stats.dead) == (0, 0, 1)
        [dead] = self.successResultOf(self.queue.list_dead())
        assert dead["body"] == "poison" and dead["receive_count"] == 3
        assert dead["sent_at"] == START and dead["msgid"] in names(self.root / "dead")[0]
        assert self.successResultOf(self.queue.redrive_dead()) == 1
        [back] = self.receive()
        assert back.body == "poison" and back.receive_count == 1

    def test_redrive_one_message(self) -> None:
        """redrive_dead(msgid) moves only that message back."""
        queue = self.make(max_receives=1)
        for body in ("a", "b"):
            self.send(body)
        for msg in self.receive(queue):
            self.successResultOf(queue.release(msg))
        assert self.receive(queue) == []
        dead = self.successResultOf(queue.list_dead())
        assert sorted(d["body"] for d in dead) == ["a", "b"]
        b_id = next(d["msgid"] for d in dead if d["body"] == "b")
        assert self.successResultOf(queue.redrive_dead(b_id)) == 1
        assert self.successResultOf(queue.redrive_dead("0" * 29)) == 0
        assert [m.body for m in self.receive(queue)] == ["b"]

    def test_unreadable_message_is_parked_not_fatal(self) -> None:
        """A message file with broken content goes to dead/ and the next one is delivered."""
        self.send("good")
        (self.root / "new" / f"{int(START * 1000) - 1:013d}-{'1' * 29}-0").write_text("{bad")
        assert [m.body for m in self.receive()] == ["good"]
        [dead] = self.successResultOf(self.queue.list_dead())
        assert dead["body"] is None and dead["msgid"] == "1" * 29

    def test_foreign_files_are_ignored(self) -> None:
        """Files the queue did not name (a stray copy, an editor's swap file) are left alone."""
        for directory in ("new", "claimed", "dead"):
            (self.root / directory / ".swp").write_text("x")
            (self.root / directory / "README").write_text("x")
        self.send("real")
        assert [m.body for m in self.receive()] == ["real"]
        stats = self.successResultOf(self.queue.stats())
        assert (stats.visible, stats.in_flight, stats.dead) == (0, 1, 0)
        assert self.successResultOf(self.queue.list_dead()) == []

    def test_stats(self) -> None:
        """stats counts visible, in flight (delayed included) and the oldest visible age."""
        self.send("old")
        self.clock.advance(7)
        self.send("new")
        self.send("delayed", delay=60)
        stats = self.successResultOf(self.queue.stats())
        assert (stats.visible, stats.in_flight, stats.dead) == (2, 1, 0)
        assert stats.oldest_age == pytest.approx(7)
        self.receive(n=2)
        stats = self.successResultOf(self.queue.stats())
        assert (stats.visible, stats.in_flight, stats.oldest_age) == (0, 3, None)

    def test_long_poll_on_clock(self) -> None:
        """A waiting receive answers at the next poll after a send, or [] when the wait ends."""
        d = self.queue.receive(max_messages=1, wait=5)
        self.clock.advance(1)
        self.assertNoResult(d)
        self.send("wake")
        self.clock.advance(0.05)
        assert [m.body for m in self.successResultOf(d)] == ["wake"]
        d = self.queue.receive(max_messages=1, wait=5)
        self.clock.pump([0.05] * 99)
        self.assertNoResult(d)
        self.clock.pump([0.05] * 2)
        assert self.successResultOf(d) == []

    def test_cancel_stops_polling(self) -> None:
        """Cancelling a long poll (shutdown) fails it and leaves no timer behind."""
        d = self.queue.receive(max_messages=1, wait=20)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        assert self.clock.getDelayedCalls() == []

    def test_malformed_handles_are_refused(self) -> None:
        """A handle that is not a spool name cannot make ack or release touch any path."""
        victim = self.root / "victim"
        victim.write_text("keep me")
        for handle in ("../victim", "/etc/passwd", "m1"):
            msg = Message(body="x", handle=handle, receive_count=1, sent_at=0)
            self.failureResultOf(self.queue.ack(msg), ValueError)
            self.failureResultOf(self.queue.release(msg), ValueError)
            self.failureResultOf(self.queue.extend(msg, 5), ValueError)
        assert victim.read_text() == "keep me"


# -- two real processes

CHILD = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from twisted.internet import defer, task
    from profiled.drivers.local.queue import LocalQueue

    async def main(reactor, root, ready, go):
        queue = LocalQueue(Path(root), reactor=reactor, visibility_timeout=30,
                           max_receives=5, poll_interval=0.01)
        Path(ready).touch()
        while not Path(go).exists():
            await task.deferLater(reactor, 0.005, lambda: None)
        got = []
        while True:
            batch = await queue.receive(max_messages=1, wait=0.5)
            if not batch:
                break
            for msg in batch:
                got.append(msg.body)
                await task.deferLater(reactor, 0.002, lambda: None)  # some work
                await queue.ack(msg)
        print(json.dumps(got))

    task.react(lambda reactor, *a: defer.ensureDeferred(main(reactor, *a)), sys.argv[1:])
    """
)


def sleep(seconds: float):
    return deferLater(reactor, seconds, lambda: None)


@pytest_twisted.ensureDeferred
async def test_two_processes_share_the_queue(tmp_path):
    """200 messages consumed by two OS processes at once: each delivered to exactly one."""
    root = tmp_path / "queue"
    queue = LocalQueue(root, reactor=reactor, visibility_timeout=30, max_receives=5)
    bodies = [f"job-{i:03d}" for i in range(200)]
    for body in bodies:
        await queue.send(body)
    ready, go, out = tmp_path / "ready", tmp_path / "go", tmp_path / "child.out"
    src = str(Path(profiled.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with out.open("wb") as sink:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(root), str(ready), str(go)],
            stdout=sink,
            stderr=subprocess.PIPE,
            env=env,
        )
    try:
        for _ in range(600):
            if ready.exists() or child.poll() is not None:
                break
            await sleep(0.01)
        assert ready.exists(), child.stderr.read().decode() if child.poll() is not None else ""
        go.touch()
        mine = []
        while True:
            batch = await queue.receive(max_messages=1, wait=0.5)
            if not batch:
                break
            for msg in batch:
                mine.append(msg.body)
                await sleep(0.002)
                await queue.ack(msg)
        for _ in range(1000):
            if child.poll() is not None:
                break
            await sleep(0.01)
        assert child.poll() == 0, child.stderr.read().decode()
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        child.stderr.close()
    theirs = json.loads(out.read_text())
    assert mine and theirs, (len(mine), len(theirs))
    assert not set(mine) & set(theirs)
    assert sorted(mine + theirs) == bodies
    stats = await queue.stats()
    assert (stats.visible, stats.in_flight, stats.dead) == (0, 0, 0)
    assert os.listdir(root / "new") == os.listdir(root / "claimed") == []
