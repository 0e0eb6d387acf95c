"""The local queue: a durable maildir-like spool shared by processes on one host.

Layout under ``root`` (docs/local-driver.md has the full story)::

    new/{visible_at_ms}-{msgid}-{receive_count}    waiting, visible from visible_at
    claimed/{deadline_ms}-{msgid}-{receive_count}  received, invisible until deadline
    dead/{dead_at_ms}-{msgid}-{receive_count}      parked after too many receives
    tmp/                                            messages being written

All the state of a message is in its file name and each transition is one
``rename``, which the kernel makes atomic: when two processes race for the
same message exactly one rename succeeds and the other gets ENOENT and moves
on. The file content (JSON ``{"body", "sent_at"}``) never changes after send.

Times in names are wall-clock epoch milliseconds from ``reactor.seconds()``,
13 digits, so that names sort by time and every process on the host agrees
on them. ``msgid`` is the send time in ms (13 digits) and 16 random hex
digits: unique, and it gives the age of a message without opening it.

Only ``send`` fsyncs. Every other transition lost in a power cut turns into
a second delivery (at-least-once), never a lost message.

Every blocking call (directory scans included: ~6 ms for 10,000 entries)
runs in a thread pool; the reactor thread only keeps time.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from pathlib import Path
from typing import Any

import attrs
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from profiled.drivers.local.store import (
    FILE_MODE,
    Blocking,
    ThreadingReactor,
    fsync_dir,
    make_dirs,
    sweep_tmp,
    unlink_if_there,
)
from profiled.errors import LostClaim, Unavailable
from profiled.interfaces import IQueue, Message, QueueStats

log = Logger()

_NAME = re.compile(r"(\d{13})-(\d{13}[0-9a-f]{16})-(\d{1,9})")
#: Expired claims are looked for at most this often (seconds) by each process.
RECOVER_INTERVAL = 1.0


@attrs.frozen
class _Name:
    """A parsed spool file name."""

    when_ms: int
    msgid: str
    count: int

    @classmethod
    def parse(cls, name: str) -> _Name | None:
        m = _NAME.fullmatch(name)
        if m is None:
            return None
        return cls(int(m[1]), m[2], int(m[3]))

    def __str__(self) -> str:
        return f"{self.when_ms:013d}-{self.msgid}-{self.count}"

    def at(self, when_ms: int, count: int | None = None) -> _Name:
        return _Name(max(0, when_ms), self.msgid, self.count if count is None else count)

    @property
    def sent_ms(self) -> int:
        return int(self.msgid[:13])


class _Receive:
    """One call of ``receive``: claim, or poll until something shows up or time runs out.

    Cancelling it stops the polling; messages claimed by an attempt that was
    already running are given back at once instead of waiting for their
    visibility timeout.
    """

    def __init__(self, queue: LocalQueue, max_messages: int, wait: float) -> None:
        self.queue = queue
        self.max_messages = max_messages
        self.deadline = queue.reactor.seconds() + wait
        self.result: Deferred[list[Message]] = Deferred(self._cancel)
        self.call: IDelayedCall | None = None
        self.cancelled = False

    def start(self) -> Deferred[list[Message]]:
        self._attempt()
        return self.result

    def _attempt(self) -> None:
        self.call = None
        d = self.queue._claim(self.max_messages)
        d.addCallbacks(self._got, self._failed)

    def _got(self, messages: list[Message]) -> None:
        if self.cancelled:
            for message in messages:
                self.queue.release(message).addErrback(lambda f: None)
            return
        left = self.deadline - self.queue.reactor.seconds()
        if messages or left <= 0:
            self.result.callback(messages)
            return
        self.call = self.queue.reactor.callLater(min(self.queue.poll_interval, left), self._attempt)

    def _failed(self, failure: Failure) -> None:
        if not self.cancelled:
            self.result.errback(failure)

    def _cancel(self, result: Deferred[list[Message]]) -> None:
        self.cancelled = True
        if self.call is not None and self.call.active():
            self.call.cancel()


@implementer(IQueue)
class LocalQueue:
    """An IQueue in a spool directory, safe for several processes at once."""

    def __init__(
        self,
        root: Path,
        reactor: ThreadingReactor,
        visibility_timeout: float,
        max_receives: int,
        poll_interval: float = 0.05,
        threadpool: ThreadPool | None = None,
    ) -> None:
        if visibility_timeout <= 0 or max_receives < 1 or poll_interval <= 0:
            raise ValueError("visibility_timeout, max_receives and poll_interval must be > 0")
        self.root = Path(root)
        self.reactor = reactor
        self.visibility_timeout = visibility_timeout
        self.max_receives = max_receives
        self.poll_interval = poll_interval
        self.new = self.root / "new"
        self.claimed = self.root / "claimed"
        self.dead = self.root / "dead"
        self.tmp = self.root / "tmp"
        self._blocking = Blocking(reactor, threadpool, f"local queue {self.root}")
        #: When this process last put expired claims back; None: not yet (at start).
        self._last_recover: float | None = None
        make_dirs(self.new, self.claimed, self.dead, self.tmp)
        sweep_tmp(self.tmp)

    def _now_ms(self) -> int:
        return _ms(self.reactor.seconds())

    def _warn(self, fmt: str, **kw: Any) -> None:
        """Log from a pool thread: the log observers belong to the reactor thread."""
        self.reactor.callFromThread(log.warn, fmt, **kw)

    # -- IQueue

    def send(self, body: str, delay: float = 0) -> Deferred[None]:
        if not isinstance(body, str):
            return defer.fail(TypeError(f"body must be str, not {type(body).__name__}"))
        now = self.reactor.seconds()
        now_ms = _ms(now)
        msgid = f"{now_ms:013d}{secrets.token_hex(8)}"
        name = _Name(now_ms + _ms(max(0.0, delay)), msgid, 0)
        content = json.dumps({"body": body, "sent_at": now}).encode("utf-8")
        return self._blocking(self._send, name, content)

    def _send(self, name: _Name, content: bytes) -> None:
        tmp = self.tmp / name.msgid
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        try:
            try:
                view = memoryview(content)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, self.new / str(name))
        except BaseException:
            unlink_if_there(tmp)
            raise
        fsync_dir(self.new)

    def receive(self, max_messages: int = 1, wait: float = 0) -> Deferred[list[Message]]:
        if max_messages < 1:
            return defer.fail(ValueError(f"max_messages must be >= 1, got {max_messages}"))
        return _Receive(self, max_messages, wait).start()

    def _claim(self, max_messages: int) -> Deferred[list[Message]]:
        """One attempt: recover expired claims if due, then claim what is visible."""
        now = self.reactor.seconds()
        recover = self._last_recover is None or now - self._last_recover >= RECOVER_INTERVAL
        if recover:
            self._last_recover = now
        return self._blocking(self._claim_sync, max_messages, _ms(now), recover)

    def _claim_sync(self, max_messages: int, now_ms: int, recover: bool) -> list[Message]:
        if recover:
            self._recover_sync(now_ms)
        out: list[Message] = []
        for entry in sorted(os.listdir(self.new)):
            if len(out) >= max_messages:
                break
            name = _Name.parse(entry)
            if name is None:
                continue  # not ours (an editor's swap file, a stray copy): leave it be
            if name.when_ms > now_ms:
                break  # sorted by visible time: nothing further is visible either
            if name.count >= self.max_receives:
                if _rename(self.new / entry, self.dead / str(name.at(now_ms))):
                    self._warn(
                        "local queue: {msgid} dead-lettered after {count} receives",
                        msgid=name.msgid,
                        count=name.count,
                    )
                continue
            handle = str(name.at(now_ms + _ms(self.visibility_timeout), name.count + 1))
            if not _rename(self.new / entry, self.claimed / handle):
                continue  # another receiver won this one
            try:
                doc = json.loads((self.claimed / handle).read_bytes())
                message = Message(
                    body=doc["body"],
                    handle=handle,
                    receive_count=name.count + 1,
                    sent_at=float(doc["sent_at"]),
                )
                if not isinstance(message.body, str):
                    raise TypeError("body is not a string")
            except FileNotFoundError:
                continue
            except (ValueError, KeyError, TypeError) as e:
                _rename(self.claimed / handle, self.dead / str(name.at(now_ms, name.count + 1)))
                self._warn(
                    "local queue: {msgid} is unreadable ({error}), dead-lettered",
                    msgid=name.msgid,
                    error=e,
                )
                continue
            out.append(message)
        return out

    def _recover_sync(self, now_ms: int) -> int:
        """Put claims whose deadline passed back into new/ (their worker died)."""
        recovered = 0
        for entry in os.listdir(self.claimed):
            name = _Name.parse(entry)
            if name is None or name.when_ms > now_ms:
                continue
            # Visible from its old deadline: it keeps its place ahead of newer work.
            if _rename(self.claimed / entry, self.new / entry):
                recovered += 1
        return recovered

    def recover(self) -> Deferred[int]:
        """Put every expired claim back now; return how many (receive does it too)."""
        now = self.reactor.seconds()
        self._last_recover = now
        return self._blocking(self._recover_sync, _ms(now))

    def _claimed_name(self, message: Message) -> _Name:
        name = _Name.parse(message.handle)
        if name is None:
            raise ValueError(f"not a local queue handle: {message.handle!r}")
        return name

    def ack(self, message: Message) -> Deferred[None]:
        try:
            self._claimed_name(message)
        except Exception:
            return defer.fail()
        # ENOENT: the claim ran out and the message came back; nothing to delete.
        return self._blocking(unlink_if_there, self.claimed / message.handle).addCallback(
            lambda _: None
        )

    def release(self, message: Message, delay: float = 0) -> Deferred[None]:
        try:
            name = self._claimed_name(message)
        except Exception:
            return defer.fail()
        target = self.new / str(name.at(self._now_ms() + _ms(max(0.0, delay))))
        d = self._blocking(_rename, self.claimed / message.handle, target)
        return d.addCallback(lambda _: None)

    def extend(self, message: Message, timeout: float) -> Deferred[Message]:
        try:
            name = self._claimed_name(message)
        except Exception:
            return defer.fail()
        handle = str(name.at(self._now_ms() + _ms(max(0.0, timeout))))

        def moved(ok: bool) -> Message:
            if not ok:
                raise LostClaim(message.handle)
            return attrs.evolve(message, handle=handle)

        d = self._blocking(_rename, self.claimed / message.handle, self.claimed / handle)
        return d.addCallback(moved)

    def stats(self) -> Deferred[QueueStats]:
        return self._blocking(self._stats, self._now_ms())

    def _stats(self, now_ms: int) -> QueueStats:
        """Count from names alone. Delayed messages count as in flight (as
        in the memory queue: both are "not visible"), expired claims as visible."""
        visible = in_flight = 0
        oldest_ms: int | None = None
        for entry in os.listdir(self.new):
            name = _Name.parse(entry)
            if name is None:
                continue
            if name.when_ms <= now_ms:
                visible += 1
                oldest_ms = name.sent_ms if oldest_ms is None else min(oldest_ms, name.sent_ms)
            else:
                in_flight += 1
        for entry in os.listdir(self.claimed):
            name = _Name.parse(entry)
            if name is None:
                continue
            if name.when_ms <= now_ms:
                visible += 1
            else:
                in_flight += 1
        dead = sum(1 for entry in os.listdir(self.dead) if _Name.parse(entry) is not None)
        oldest = None if oldest_ms is None else max(0.0, (now_ms - oldest_ms) / 1000)
        return QueueStats(visible=visible, in_flight=in_flight, dead=dead, oldest_age=oldest)

    def ping(self) -> Deferred[None]:
        return self._blocking(self._ping)

    def _ping(self) -> None:
        for path in (self.new, self.claimed, self.dead):
            if not path.is_dir():
                raise Unavailable(f"local queue: {path} is not a directory")
        probe = self.tmp / f"ping-{secrets.token_hex(8)}"
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE))
        os.unlink(probe)

    # -- operators (profiled-admin)

    def list_dead(self) -> Deferred[list[dict[str, Any]]]:
        """The parked messages, oldest first: msgid, body, receive_count, sent_at, dead_at.

        ``body`` is None for a message whose file could not be read.
        """
        return self._blocking(self._list_dead)

    def _list_dead(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for entry in sorted(os.listdir(self.dead)):
            name = _Name.parse(entry)
            if name is None:
                continue
            body: str | None = None
            sent_at = name.sent_ms / 1000
            try:
                doc = json.loads((self.dead / entry).read_bytes())
                body = doc["body"] if isinstance(doc["body"], str) else None
                sent_at = float(doc["sent_at"])
            except FileNotFoundError:
                continue  # redriven meanwhile
            except (ValueError, KeyError, TypeError):
                pass
            out.append(
                {
                    "msgid": name.msgid,
                    "body": body,
                    "receive_count": name.count,
                    "sent_at": sent_at,
                    "dead_at": name.when_ms / 1000,
                }
            )
        return out

    def redrive_dead(self, msgid: str | None = None) -> Deferred[int]:
        """Move parked messages (all, or the one ``msgid``) back to new/ with count 0."""
        return self._blocking(self._redrive, msgid, self._now_ms())

    def _redrive(self, msgid: str | None, now_ms: int) -> int:
        moved = 0
        for entry in os.listdir(self.dead):
            name = _Name.parse(entry)
            if name is None or (msgid is not None and name.msgid != msgid):
                continue
            if _rename(self.dead / entry, self.new / str(name.at(now_ms, 0))):
                moved += 1
        if moved:
            fsync_dir(self.new)
        return moved


def _ms(seconds: float) -> int:
    """Seconds to the whole milliseconds of spool names (rounded: 0.001 s is 1 ms)."""
    return round(seconds * 1000)


def _rename(source: Path, target: Path) -> bool:
    """Move ``source`` to ``target``; False if ``source`` is gone (someone else won)."""
    try:
        os.rename(source, target)
    except FileNotFoundError:
        return False
    return True
