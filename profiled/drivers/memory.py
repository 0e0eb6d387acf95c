"""In-memory store and queue, for unit tests of the roles.

They follow the same contract as the real drivers (tests/contract checks
them too) and add a switch to simulate an outage. Never used in production:
nothing here survives a restart.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Mapping
from typing import BinaryIO

import attrs
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer, IReactorTime
from twisted.internet.task import deferLater
from zope.interface import implementer

from profiled.drivers.keys import check_key
from profiled.errors import LostClaim, NotFound, Unavailable
from profiled.interfaces import IQueue, IStore, IStoredObject, Message, ObjectInfo, QueueStats


@implementer(IStoredObject)
@attrs.define
class _MemoryObject:
    info: ObjectInfo
    data: bytes

    def deliver(self, consumer: IConsumer) -> Deferred[None]:
        consumer.write(self.data)
        return defer.succeed(None)

    def abandon(self) -> None:
        pass


@implementer(IStore)
class MemoryStore:
    """A dict of key -> (info, bytes)."""

    def __init__(self) -> None:
        self.objects: dict[str, tuple[ObjectInfo, bytes]] = {}
        #: Set to True to make every call fail with Unavailable.
        self.down = False

    def _checked(self, key: str | None = None) -> None:
        """Refuse a bad key, then fail as a real store would while ``down``."""
        if key is not None:
            check_key(key)
        if self.down:
            raise Unavailable("memory store is down")

    def put(
        self,
        key: str,
        source: BinaryIO,
        length: int,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
        cache_control: str | None = None,
    ) -> Deferred[ObjectInfo]:
        return defer.execute(self._put, key, source, length, content_type, metadata, cache_control)

    def _put(
        self,
        key: str,
        source: BinaryIO,
        length: int,
        content_type: str,
        metadata: Mapping[str, str] | None,
        cache_control: str | None,
    ) -> ObjectInfo:
        self._checked(key)
        data = source.read(length)
        if len(data) != length:
            raise ValueError(f"source ended after {len(data)} of {length} bytes")
        info = ObjectInfo(
            key=key,
            size=length,
            etag=hashlib.sha256(data).hexdigest()[:32],
            content_type=content_type,
            metadata=dict(metadata or {}),
            cache_control=cache_control,
        )
        self.objects[key] = (info, data)
        return info

    def head(self, key: str) -> Deferred[ObjectInfo | None]:
        return defer.execute(self._head, key)

    def _head(self, key: str) -> ObjectInfo | None:
        self._checked(key)
        entry = self.objects.get(key)
        return entry[0] if entry else None

    def get(self, key: str) -> Deferred[IStoredObject]:
        return defer.execute(self._get, key)

    def _get(self, key: str) -> IStoredObject:
        self._checked(key)
        entry = self.objects.get(key)
        if entry is None:
            raise NotFound(key)
        return _MemoryObject(*entry)

    def delete(self, key: str) -> Deferred[None]:
        return defer.execute(self._delete, key)

    def _delete(self, key: str) -> None:
        self._checked(key)
        self.objects.pop(key, None)

    def ping(self) -> Deferred[None]:
        return defer.execute(self._checked)


@attrs.define
class _Entry:
    body: str
    sent_at: float
    visible_at: float
    receive_count: int = 0
    handle: str | None = None


@implementer(IQueue)
class MemoryQueue:
    """A list of messages with visibility deadlines on an injected clock."""

    def __init__(
        self, clock: IReactorTime, visibility_timeout: float = 30.0, max_receives: int = 5
    ) -> None:
        self.clock = clock
        self.visibility_timeout = visibility_timeout
        self.max_receives = max_receives
        self.entries: list[_Entry] = []
        self.dead: list[_Entry] = []
        self.down = False
        self._handles = itertools.count(1)

    def _check(self) -> None:
        if self.down:
            raise Unavailable("memory queue is down")

    def send(self, body: str, delay: float = 0) -> Deferred[None]:
        try:
            self._check()
        except Exception:
            return defer.fail()
        now = self.clock.seconds()
        self.entries.append(_Entry(body=body, sent_at=now, visible_at=now + delay))
        return defer.succeed(None)

    def receive(self, max_messages: int = 1, wait: float = 0) -> Deferred[list[Message]]:
        return Deferred.fromCoroutine(self._receive(max_messages, wait))

    async def _receive(self, max_messages: int, wait: float) -> list[Message]:
        deadline = self.clock.seconds() + wait
        while True:
            self._check()
            out = self._claim(max_messages)
            if out or self.clock.seconds() >= deadline:
                return out
            await deferLater(self.clock, min(0.05, deadline - self.clock.seconds()), lambda: None)

    def _claim(self, max_messages: int) -> list[Message]:
        now = self.clock.seconds()
        out: list[Message] = []
        for entry in list(self.entries):
            if len(out) >= max_messages:
                break
            if entry.visible_at > now:
                continue
            if entry.receive_count >= self.max_receives:
                self.entries.remove(entry)
                self.dead.append(entry)
                continue
            entry.receive_count += 1
            entry.visible_at = now + self.visibility_timeout
            entry.handle = f"m{next(self._handles)}"
            out.append(Message(entry.body, entry.handle, entry.receive_count, entry.sent_at))
        return out

    def _find(self, message: Message) -> _Entry:
        for entry in self.entries:
            if entry.handle == message.handle and entry.visible_at > self.clock.seconds():
                return entry
        raise LostClaim(message.handle)

    def ack(self, message: Message) -> Deferred[None]:
        try:
            self._check()
            self.entries.remove(self._find(message))
        except LostClaim:
            pass
        except Exception:
            return defer.fail()
        return defer.succeed(None)

    def release(self, message: Message, delay: float = 0) -> Deferred[None]:
        try:
            self._check()
            entry = self._find(message)
        except LostClaim:
            return defer.succeed(None)
        except Exception:
            return defer.fail()
        entry.visible_at = self.clock.seconds() + delay
        entry.handle = None
        return defer.succeed(None)

    def extend(self, message: Message, timeout: float) -> Deferred[Message]:
        try:
            self._check()
            entry = self._find(message)
        except Exception:
            return defer.fail()
        entry.visible_at = self.clock.seconds() + timeout
        return defer.succeed(message)

    def stats(self) -> Deferred[QueueStats]:
        now = self.clock.seconds()
        visible = [e for e in self.entries if e.visible_at <= now]
        oldest = max((now - e.sent_at for e in visible), default=None)
        return defer.succeed(
            QueueStats(len(visible), len(self.entries) - len(visible), len(self.dead), oldest)
        )

    def ping(self) -> Deferred[None]:
        try:
            self._check()
        except Exception:
            return defer.fail()
        return defer.succeed(None)
