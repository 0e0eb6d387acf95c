"""Helpers to read stored objects into files or bytes.

``IStoredObject.deliver`` writes into an ``IConsumer`` (the proxy hands it
the HTTP request itself); these adapt a plain file object to that.
"""

from __future__ import annotations

import io
from typing import BinaryIO

from twisted.internet.interfaces import IConsumer
from zope.interface import implementer

from profiled.interfaces import IStore


@implementer(IConsumer)
class FileConsumer:
    """An IConsumer that writes everything it gets into a file object.

    A file never pushes back, so a streaming producer is never paused and a
    pull producer is asked for more until it unregisters.
    """

    def __init__(self, sink: BinaryIO) -> None:
        self.sink = sink
        self.producer: object | None = None

    def registerProducer(self, producer: object, streaming: bool) -> None:
        self.producer = producer
        if not streaming:
            while self.producer is producer:
                producer.resumeProducing()  # type: ignore[attr-defined]

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        self.sink.write(data)


async def read_bytes(store: IStore, key: str, limit: int = 1 << 20) -> bytes:
    """Read a small object whole (failure records, tests).

    Refuses objects over ``limit`` bytes so that a surprise can never
    pull a large object into memory.
    """
    obj = await store.get(key)
    if obj.info.size > limit:
        obj.abandon()
        raise ValueError(f"{key}: {obj.info.size} bytes is over the {limit} byte limit")
    buf = io.BytesIO()
    await obj.deliver(FileConsumer(buf))
    return buf.getvalue()


async def download(store: IStore, key: str, sink: BinaryIO) -> int:
    """Stream ``key`` into the open file ``sink``; return the byte count."""
    obj = await store.get(key)
    await obj.deliver(FileConsumer(sink))
    return obj.info.size
