"""Streaming against real S3 servers: back-pressure and abandoned bodies."""

from __future__ import annotations

import io
import os
import uuid

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.interfaces import IConsumer
from zope.interface import implementer

from profiled.drivers.aws.s3 import S3Store
from profiled.drivers.consumers import read_bytes

pytestmark = pytest.mark.aws


@pytest.fixture(params=["moto_server", "seaweedfs_server"])
def s3_server(request):
    """Each S3 server of the session in turn."""
    return request.getfixturevalue(request.param)


@implementer(IConsumer)
class StopAndGo:
    """Pauses its producer after every chunk and resumes it a moment later, like a slow client."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.producer = None
        self.pauses = 0
        self.written_while_paused = 0
        self.paused = False

    def registerProducer(self, producer, streaming):  # type: ignore[no-untyped-def]
        assert streaming
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        if self.paused:
            self.written_while_paused += len(data)
        self.chunks.append(data)
        if not self.paused and self.producer is not None:
            self.paused = True
            self.pauses += 1
            self.producer.pauseProducing()
            reactor.callLater(0.001, self._resume)

    def _resume(self) -> None:
        self.paused = False
        if self.producer is not None:
            self.producer.resumeProducing()


async def _store(server) -> S3Store:  # type: ignore[no-untyped-def]
    store = S3Store(server.client(), server.endpoint, f"stream-{uuid.uuid4().hex[:12]}")
    await store.create_bucket()
    return store


@pytest_twisted.ensureDeferred
async def test_slow_consumer_pauses_the_download(s3_server):
    """A consumer that keeps pausing gets every byte, and the socket stops while it is paused."""
    store = await _store(s3_server)
    data = os.urandom(3 * 1024 * 1024)
    await store.put("big", io.BytesIO(data), len(data), "application/octet-stream")
    obj = await store.get("big")
    consumer = StopAndGo()
    await obj.deliver(consumer)
    assert b"".join(consumer.chunks) == data
    assert consumer.pauses > 1
    # Bytes already in the read buffer may land after a pause, never a flood.
    assert consumer.written_while_paused <= 256 * 1024


@pytest_twisted.ensureDeferred
async def test_abandoned_large_body_frees_the_client(s3_server):
    """Abandoning a large object closes its connection; the store keeps working."""
    store = await _store(s3_server)
    data = os.urandom(1024 * 1024)
    await store.put("big", io.BytesIO(data), len(data), "application/octet-stream")
    for _ in range(3):
        obj = await store.get("big")
        assert obj.info.size == len(data)
        obj.abandon()
    assert await read_bytes(store, "big", limit=len(data)) == data


@pytest_twisted.ensureDeferred
async def test_metadata_round_trips_any_string(s3_server):
    """Non-ASCII, spaces at the ends and percent signs survive S3's ASCII headers."""
    store = await _store(s3_server)
    value = " ünïcødé 画像 %20 + / end "
    await store.put("k", io.BytesIO(b"x"), 1, "image/png", {"principal": value, "a-b_c": ""})
    info = await store.head("k")
    assert info is not None
    assert info.metadata == {"principal": value, "a-b_c": ""}
    obj = await store.get("k")
    obj.abandon()
    assert obj.info.metadata["principal"] == value
