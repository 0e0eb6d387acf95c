"""The store seam over S3 (or any S3-compatible service), path-style.

Bodies stream both ways: a PUT reads the caller's file in chunks through a
body producer with a known Content-Length (the payload is sent as
``UNSIGNED-PAYLOAD``, so it is never read twice nor held in memory), and a
GET hands the HTTP transport to the consumer as its producer, so a slow
reader pauses the download instead of buffering it.

Metadata travels as ``x-amz-meta-<name>`` headers. Header values are
ASCII and trimmed, so every value is percent-encoded (UTF-8) on the way in
and decoded on the way out: any string round-trips, non-ASCII and
surrounding spaces included.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO, cast
from urllib.parse import quote, unquote

from twisted.internet import defer, task
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IBodyProducer, IResponse
from zope.interface import implementer

from profiled.drivers.aws.client import AwsClient, AwsNotFound, Response
from profiled.drivers.aws.signing import EMPTY_SHA256, UNSIGNED_PAYLOAD, object_url
from profiled.drivers.keys import check_key
from profiled.errors import NotFound, Unavailable
from profiled.interfaces import IStore, IStoredObject, ObjectInfo

META_PREFIX = "x-amz-meta-"
#: Metadata names become header names: keep them to what every S3 accepts.
META_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
#: Characters left as they are in encoded metadata values: readable in the
#: S3 console for the usual cases (principals, e-mail addresses, URLs).
_META_SAFE = "-_.@:/+=,"
#: Stands for the empty string: some S3-compatible servers drop headers with
#: empty values. A real "~" is always escaped, so this cannot be confused.
_META_EMPTY = "~"
#: Below this, an abandoned body is read and dropped to keep the connection.
_DRAIN_LIMIT = 64 * 1024


def encode_meta(value: str) -> str:
    """Percent-encode a metadata value into a safe, non-empty header value."""
    if not value:
        return _META_EMPTY
    return quote(value, safe=_META_SAFE).replace("~", "%7E")


def decode_meta(value: str) -> str:
    """Inverse of ``encode_meta``."""
    if value == _META_EMPTY:
        return ""
    return unquote(value, errors="strict")


@implementer(IBodyProducer)
class _FileProducer:
    """Streams ``length`` bytes of the caller's file, from ``start``, as a request body.

    Unlike FileBodyProducer it stops at ``length`` (the rest of the file is
    not ours), never closes the caller's file, and fails if the file ends
    early, so a short source fails the PUT instead of storing a truncated
    object. Reads happen a chunk per cooperator turn, paused when the
    socket is full.
    """

    def __init__(
        self,
        source: BinaryIO,
        length: int,
        start: int | None,
        read_size: int = 64 * 1024,
        cooperator: Any = task,
    ) -> None:
        self.length = length
        self._source = source
        self._start = start
        self._read_size = read_size
        self._cooperator = cooperator
        self._task: Any = None

    def _chunks(self, consumer: IConsumer) -> Iterator[None]:
        if self._start is not None:
            self._source.seek(self._start)
        remaining = self.length
        while remaining:
            chunk = self._source.read(min(self._read_size, remaining))
            if not chunk:
                raise ValueError(
                    f"source ended after {self.length - remaining} of {self.length} bytes"
                )
            remaining -= len(chunk)
            consumer.write(chunk)
            yield None

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        self._task = self._cooperator.cooperate(self._chunks(consumer))
        d: Deferred[None] = self._task.whenDone()

        def stopped(reason: Failure) -> Deferred[None]:
            reason.trap(task.TaskStopped)
            return Deferred()  # stopProducing: the request is being torn down

        d.addCallbacks(lambda _: None, stopped)
        return d

    def pauseProducing(self) -> None:
        self._task.pause()

    def resumeProducing(self) -> None:
        self._task.resume()

    def stopProducing(self) -> None:
        try:
            self._task.stop()
        except task.TaskFinished:
            pass


@implementer(IPushProducer)
class _BodyPump(Protocol):
    """Writes a response body into a consumer, passing back-pressure to the socket.

    The consumer gets the HTTP transport itself as a streaming producer:
    when the consumer pauses, the socket stops being read and TCP slows S3
    down; nothing piles up in memory.
    """

    def __init__(self, consumer: IConsumer, expected: int | None) -> None:
        self.consumer = consumer
        self.expected = expected
        self.received = 0
        self.done: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.consumer.registerProducer(self, True)

    # IPushProducer, forwarded to the HTTP transport.
    def pauseProducing(self) -> None:
        if self.transport is not None:
            cast(IPushProducer, self.transport).pauseProducing()

    def resumeProducing(self) -> None:
        if self.transport is not None:
            cast(IPushProducer, self.transport).resumeProducing()

    def stopProducing(self) -> None:
        if self.transport is not None:
            cast(IPushProducer, self.transport).stopProducing()

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        self.consumer.write(data)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self.consumer.unregisterProducer()
        complete = reason.check(ResponseDone) or reason.check(PotentialDataLoss)
        if complete and (self.expected is None or self.received == self.expected):
            self.done.callback(None)
            return
        self.done.errback(
            Unavailable(
                f"S3 body broke off after {self.received} of {self.expected} bytes: "
                f"{reason.getErrorMessage()}"
            )
        )


class _Drain(Protocol):
    """Reads and drops a small unwanted body, so the connection can be reused."""

    def __init__(self, close: bool) -> None:
        self.close = close

    def connectionMade(self) -> None:
        if self.close and self.transport is not None:
            cast(IPushProducer, self.transport).stopProducing()

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        pass


@implementer(IStoredObject)
class _S3Object:
    """An object whose headers arrived and whose body waits in the socket."""

    def __init__(self, info: ObjectInfo, response: IResponse) -> None:
        self.info = info
        self._response: IResponse | None = response

    def deliver(self, consumer: IConsumer) -> Deferred[None]:
        response, self._response = self._response, None
        if response is None:
            return defer.fail(RuntimeError(f"{self.info.key}: deliver or abandon called twice"))
        pump = _BodyPump(consumer, self.info.size)
        response.deliverBody(pump)
        return pump.done

    def abandon(self) -> None:
        response, self._response = self._response, None
        if response is not None:
            response.deliverBody(_Drain(close=self.info.size > _DRAIN_LIMIT))


def _info(key: str, headers: Mapping[str, str], size: int | None = None) -> ObjectInfo:
    metadata = {
        name[len(META_PREFIX) :]: decode_meta(value)
        for name, value in headers.items()
        if name.startswith(META_PREFIX)
    }
    return ObjectInfo(
        key=key,
        size=int(headers.get("content-length", "0")) if size is None else size,
        etag=headers.get("etag", "").strip('"'),
        content_type=headers.get("content-type", "application/octet-stream"),
        metadata=metadata,
        cache_control=headers.get("cache-control"),
    )


@implementer(IStore)
class S3Store:
    """One bucket as an IStore.

    ``endpoint`` is the service's base URL (``https://s3.eu-west-1.amazonaws.com``
    or a compatible server's); objects live at ``<endpoint>/<bucket>/<key>``.
    """

    def __init__(
        self, client: AwsClient, endpoint: str, bucket: str, cooperator: Any = task
    ) -> None:
        self.client = client
        self.endpoint = endpoint.rstrip("/")
        self.bucket = bucket
        #: Schedules the chunked reads of a PUT body (a test passes its own).
        self.cooperator = cooperator

    def _url(self, key: str | None = None) -> str:
        return object_url(self.endpoint, self.bucket, key)

    def put(
        self,
        key: str,
        source: BinaryIO,
        length: int,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
        cache_control: str | None = None,
    ) -> Deferred[ObjectInfo]:
        return Deferred.fromCoroutine(
            self._put(key, source, length, content_type, dict(metadata or {}), cache_control)
        )

    async def _put(
        self,
        key: str,
        source: BinaryIO,
        length: int,
        content_type: str,
        metadata: dict[str, str],
        cache_control: str | None,
    ) -> ObjectInfo:
        check_key(key)
        headers = {"Content-Type": content_type}
        if cache_control:
            headers["Cache-Control"] = cache_control
        for name, value in metadata.items():
            if not META_NAME.fullmatch(name):
                raise ValueError(
                    f"metadata name {name!r}: use lower-case letters, digits, '-' and '_'"
                )
            headers[META_PREFIX + name] = encode_meta(value)
        seekable = _seekable(source)
        start = source.tell() if seekable else 0

        def producer() -> IBodyProducer:
            return _FileProducer(
                source, length, start if seekable else None, cooperator=self.cooperator
            )

        response = await self.client.request(
            "s3",
            "PUT",
            self._url(key),
            headers,
            producer=producer,
            payload_hash=UNSIGNED_PAYLOAD,
            # A stream that cannot be rewound cannot be sent twice.
            retryable=seekable,
        )
        return ObjectInfo(
            key=key,
            size=length,
            etag=response.headers.get("etag", "").strip('"'),
            content_type=content_type,
            metadata=metadata,
            cache_control=cache_control,
        )

    def head(self, key: str) -> Deferred[ObjectInfo | None]:
        return Deferred.fromCoroutine(self._head(key))

    async def _head(self, key: str) -> ObjectInfo | None:
        check_key(key)
        try:
            response = await self.client.request(
                "s3", "HEAD", self._url(key), payload_hash=EMPTY_SHA256
            )
        except NotFound:
            return None
        return _info(key, response.headers)

    def get(self, key: str) -> Deferred[IStoredObject]:
        return Deferred.fromCoroutine(self._get(key))

    async def _get(self, key: str) -> IStoredObject:
        check_key(key)
        try:
            response: Response = await self.client.request(
                "s3", "GET", self._url(key), payload_hash=EMPTY_SHA256, stream=True
            )
        except AwsNotFound as e:
            raise NotFound(key) from e
        assert response.raw is not None
        return _S3Object(_info(key, response.headers), response.raw)

    def delete(self, key: str) -> Deferred[None]:
        return Deferred.fromCoroutine(self._delete(key))

    async def _delete(self, key: str) -> None:
        check_key(key)
        try:
            await self.client.request("s3", "DELETE", self._url(key), payload_hash=EMPTY_SHA256)
        except NotFound:
            pass

    def ping(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._ping())

    async def _ping(self) -> None:
        await self.client.request("s3", "HEAD", self._url(), payload_hash=EMPTY_SHA256)

    def create_bucket(self) -> Deferred[None]:
        """Create the bucket if it is missing (tests and set-up tools)."""
        return Deferred.fromCoroutine(self._create_bucket())

    async def _create_bucket(self) -> None:
        body = b""
        region = self.client.region
        if region and region != "us-east-1":
            body = (
                '<CreateBucketConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                f"<LocationConstraint>{region}</LocationConstraint></CreateBucketConfiguration>"
            ).encode()
        try:
            await self.client.request("s3", "PUT", self._url(), body=body)
        except Exception as e:
            if getattr(e, "code", "") not in ("BucketAlreadyOwnedByYou",):
                raise


def _seekable(source: BinaryIO) -> bool:
    """Whether ``source`` can be rewound for a retry.

    Duck-typed: a file-like object with ``tell`` and ``seek`` counts even
    without ``seekable()`` (the web role's upload spool is one).
    """
    seekable = getattr(source, "seekable", None)
    if seekable is not None:
        try:
            if not seekable():
                return False
        except (OSError, ValueError):
            return False
    try:
        source.tell()
    except (AttributeError, OSError, ValueError):
        return False
    return callable(getattr(source, "seek", None))
