"""The two seams of profiled: the object store and the work queue.

Every role talks to the outside world only through these. Two drivers
implement them (``local`` and ``aws``) and an in-memory one ships for unit
tests; one contract test suite (tests/contract) holds all of them to the
same behaviour.

Every method returns a Deferred and never blocks the reactor.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import BinaryIO

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer
from zope.interface import Attribute, Interface


@attrs.frozen
class ObjectInfo:
    """What a store knows about one object, without its bytes."""

    key: str
    size: int
    #: A strong validator for the exact bytes, without quotes.
    etag: str
    content_type: str
    metadata: Mapping[str, str] = attrs.field(factory=dict)
    cache_control: str | None = None


class IStoredObject(Interface):
    """An object opened for reading: its info now, its bytes on demand."""

    info = Attribute("The ObjectInfo of the object.")

    def deliver(consumer: IConsumer) -> Deferred[None]:
        """Write the bytes into ``consumer``, honouring its back-pressure.

        Fires when all bytes are written; fails with ``Unavailable`` when
        the store breaks off mid-way. Call at most once.
        """

    def abandon() -> None:
        """Release the object without reading it (a HEAD, a 304)."""


class IStore(Interface):
    """A flat namespace of immutable objects addressed by string keys.

    Keys are up to 200 UTF-8 bytes of printable characters (spaces, ``+``,
    ``~`` and non-ASCII included); a bad key fails with ``InvalidKey``.
    A store that cannot be reached fails with ``Unavailable``.
    """

    def put(
        key: str,
        source: BinaryIO,
        length: int,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
        cache_control: str | None = None,
    ) -> Deferred[ObjectInfo]:
        """Store ``length`` bytes read from ``source`` under ``key``.

        The write is atomic: a reader sees the old object, or none, or the
        whole new one, never a part. ``source`` is read from its current
        position; the caller keeps ownership and closes it.
        """

    def head(key: str) -> Deferred[ObjectInfo | None]:
        """Return the info of ``key``, or None when there is no such object."""

    def get(key: str) -> Deferred[IStoredObject]:
        """Open ``key`` for reading; fails with ``NotFound`` when missing."""

    def delete(key: str) -> Deferred[None]:
        """Remove ``key``; deleting a missing key is not an error."""

    def ping() -> Deferred[None]:
        """Succeed when the store is reachable (for /__heartbeat__)."""


class ISpooledBody(Interface):
    """Bytes being written straight into a store's own space, not yet an object.

    Made by ``IAdoptingStore.spool``; written by the caller as the bytes
    arrive, then either adopted (``IAdoptingStore.adopt``) or discarded.
    """

    size = Attribute("Bytes written so far.")

    def write(data: bytes) -> None:
        """Append ``data`` (a blocking write; ``OSError`` when the disk fails)."""

    def discard() -> None:
        """Drop the bytes; nothing stays behind. A no-op once adopted or discarded."""


class IAdoptingStore(IStore):
    """Optional: a store that can take bytes spooled into its own space.

    ``put`` copies a body from wherever it was spooled; a store that also
    provides this lets the web role write an upload into the store's space
    as it arrives and then adopt that file, so the bytes are written once.
    Check with ``IAdoptingStore.providedBy``; stores without it (S3, memory)
    are used through ``put``.
    """

    def spool() -> ISpooledBody:
        """A new, empty body to write into. Blocking (one file create): callers
        on the reactor thread accept that cost, as for a temporary file."""

    def adopt(
        key: str,
        body: ISpooledBody,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
        cache_control: str | None = None,
    ) -> Deferred[ObjectInfo]:
        """Store the bytes written into ``body`` under ``key``, as ``put`` of the
        same bytes would (same atomicity, durability and etag).

        ``body`` is used up whatever the outcome: on failure its bytes are
        dropped, and a later ``discard`` does nothing.
        """


@attrs.frozen
class Message:
    """One delivery of a queued message."""

    body: str
    #: Opaque handle naming this delivery (ack/release/extend take it).
    handle: str
    #: How many times the message has been received, this time included.
    receive_count: int
    #: When the message was first sent, in seconds since the epoch.
    sent_at: float


@attrs.frozen
class QueueStats:
    """Approximate depth of a queue, for metrics and the heartbeat."""

    visible: int
    in_flight: int
    dead: int
    #: Age in seconds of the oldest visible message, None if unknown/empty.
    oldest_age: float | None = None


class IQueue(Interface):
    """An at-least-once work queue with visibility timeouts and dead-letter.

    A received message is invisible to other receivers for the queue's
    visibility timeout; unless acknowledged it comes back after that (a
    worker that died loses nothing). A message received more than the
    queue's ``max_receives`` times is moved to the dead-letter store
    instead of being delivered again.
    """

    def send(body: str, delay: float = 0) -> Deferred[None]:
        """Enqueue ``body``, visible after ``delay`` seconds."""

    def receive(max_messages: int = 1, wait: float = 0) -> Deferred[list[Message]]:
        """Claim up to ``max_messages``; wait up to ``wait`` s for the first one."""

    def ack(message: Message) -> Deferred[None]:
        """Delete a delivered message: its work is done."""

    def release(message: Message, delay: float = 0) -> Deferred[None]:
        """Give a delivered message back, visible again after ``delay`` s."""

    def extend(message: Message, timeout: float) -> Deferred[Message]:
        """Keep a delivered message invisible for ``timeout`` more seconds.

        Returns the delivery to use from now on (its handle may change).
        Fails with ``LostClaim`` when the message already came back.
        """

    def stats() -> Deferred[QueueStats]:
        """Return approximate counts of visible, in-flight and dead messages."""

    def ping() -> Deferred[None]:
        """Succeed when the queue is reachable (for /__heartbeat__)."""
