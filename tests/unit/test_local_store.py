"""LocalStore beyond the contract: confinement, atomicity, damage, streaming."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import threading
from pathlib import Path

import pytest
import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IConsumer
from twisted.internet.task import deferLater
from twisted.internet.testing import StringTransport
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from zope.interface import implementer

from profiled.drivers.consumers import FileConsumer, read_bytes
from profiled.drivers.keys import check_key
from profiled.drivers.local.store import MAX_NAME, LocalStore, encode_key
from profiled.errors import InvalidKey, NotFound, Unavailable
from tests.unit.inline_reactor import InlineReactor


def sleep(seconds: float):
    return deferLater(reactor, seconds, lambda: None)


def files_under(path: Path) -> list[Path]:
    """Every regular file below ``path``."""
    return [Path(d) / f for d, _, fs in os.walk(path) for f in fs]


def data_and_meta(root: Path) -> tuple[list[Path], list[Path]]:
    files = files_under(root / "objects")
    return (
        [f for f in files if f.name.endswith(".data")],
        [f for f in files if f.name.endswith(".meta")],
    )


def put(store: LocalStore, key: str, data: bytes, content_type: str = "text/plain"):
    return store.put(key, io.BytesIO(data), len(data), content_type)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def store(root: Path) -> LocalStore:
    return LocalStore(root, reactor=reactor)


# -- keys cannot leave the root


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("key", ["../../etc/passwd", "a/../../b", "/etc/passwd", "..", "a/./b"])
async def test_traversal_keys_are_refused(store, tmp_path, key):
    """Keys that climb out of a namespace are refused by every method and create nothing."""
    before = set(files_under(tmp_path))
    for call in (
        lambda: put(store, key, b"x"),
        lambda: store.head(key),
        lambda: store.get(key),
        lambda: store.delete(key),
    ):
        with pytest.raises(InvalidKey):
            await call()
    assert set(files_under(tmp_path)) == before


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize(
    "key",
    ["%2e%2e", "%2e%2e/%2e%2e/etc/passwd", "..%2f..%2fescape", "%2F", "~", "x.meta", "a.b.data"],
)
async def test_escaped_keys_stay_inside_root(store, root, tmp_path, key):
    """Percent-escapes and dots in keys are plain characters: the file stays under the root."""
    await put(store, key, b"inside")
    assert await read_bytes(store, key) == b"inside"
    for path in files_under(tmp_path):
        assert path.resolve().is_relative_to((root / "objects").resolve())
        assert path.parent.parent == root / "objects"
    await store.delete(key)
    assert files_under(root / "objects") == []


def _valid(key: str) -> bool:
    try:
        check_key(key)
    except InvalidKey:
        return False
    return True


@given(
    st.lists(st.text(min_size=1, max_size=80).filter(_valid), min_size=2, max_size=6, unique=True)
)
def test_encoded_names_are_flat_short_and_distinct(keys):
    """Every valid key maps to one flat file name under 255 bytes, different for every key."""
    encoded = {encode_key(key) for key in keys}
    assert len(encoded) == len(keys)
    for fanout, name in encoded:
        assert len(fanout) == 2 and "/" not in name and "." not in name
        assert len(name.encode()) <= MAX_NAME


@pytest_twisted.ensureDeferred
async def test_longest_keys_get_short_hashed_names(store, root):
    """200-byte keys (worst case: all escaped) round-trip under names far below 255 bytes."""
    keys = ["é" * 100, "é" * 99 + "x", "~" * 200]
    for i, key in enumerate(keys):
        await put(store, key, f"v{i}".encode())
    for i, key in enumerate(keys):
        assert await read_bytes(store, key) == f"v{i}".encode()
    for path in files_under(root):
        assert len(path.name.encode()) < 255


# -- atomic writes


@pytest_twisted.ensureDeferred
async def test_put_leaves_no_temp_files_and_no_old_data(store, root):
    """After puts and overwrites, tmp/ is empty and each key has one manifest and one data file."""
    await put(store, "a", b"one")
    await put(store, "a", b"two")
    await put(store, "b", b"three")
    assert os.listdir(root / "tmp") == []
    data, meta = data_and_meta(root)
    assert len(data) == 2 and len(meta) == 2


class BrokenSource(io.RawIOBase):
    """A source that fails after handing out some bytes, like a cut-off upload."""

    def __init__(self, good: bytes) -> None:
        self.good = good

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if self.good:
            out, self.good = self.good, b""
            return out
        raise RuntimeError("connection reset while reading the upload")


@pytest_twisted.ensureDeferred
async def test_failed_put_keeps_old_object_and_leaves_nothing(store, root):
    """A put that fails mid-way leaves the old object whole and no partial file anywhere."""
    first = await put(store, "k", b"old object")
    with pytest.raises(RuntimeError):
        await store.put("k", BrokenSource(b"new ob"), 100, "text/plain")
    with pytest.raises(ValueError):
        await store.put("k", io.BytesIO(b"short"), 100, "text/plain")
    assert await read_bytes(store, "k") == b"old object"
    assert (await store.head("k")).etag == first.etag
    assert os.listdir(root / "tmp") == []
    data, meta = data_and_meta(root)
    assert len(data) == 1 and len(meta) == 1


@pytest_twisted.ensureDeferred
async def test_adopt_renames_the_spooled_file_and_leaves_no_temp_files(store, root):
    """An adopted body is the very file written into tmp/ (no copy); tmp/ ends empty,
    and so it does after a discard or an adopt that fails."""
    body = store.spool()
    body.write(b"spooled ")
    body.write(b"bytes")
    (spooled,) = os.listdir(root / "tmp")
    assert stat.S_IMODE((root / "tmp" / spooled).stat().st_mode) & 0o007 == 0
    inode = (root / "tmp" / spooled).stat().st_ino
    await store.adopt("k", body, "text/plain")
    (data,), _ = data_and_meta(root)
    assert data.stat().st_ino == inode
    assert await read_bytes(store, "k") == b"spooled bytes"
    dropped = store.spool()
    dropped.write(b"refused upload")
    dropped.discard()
    bad_key = store.spool()
    bad_key.write(b"x")
    with pytest.raises(InvalidKey):
        await store.adopt("a//b", bad_key, "text/plain")
    assert os.listdir(root / "tmp") == []


@pytest_twisted.ensureDeferred
async def test_failed_adopt_keeps_old_object_and_leaves_nothing(store, root, monkeypatch):
    """An adopt whose commit fails (the disk fills at the manifest's rename) leaves
    the old object whole, no stray file, and fails with Unavailable."""
    first = await put(store, "k", b"old object")
    rename = os.rename

    def full_disk(source, target):
        if str(target).endswith(".meta"):
            raise OSError(28, "No space left on device")
        rename(source, target)

    body = store.spool()
    body.write(b"new object")
    monkeypatch.setattr(os, "rename", full_disk)
    with pytest.raises(Unavailable):
        await store.adopt("k", body, "text/plain")
    monkeypatch.undo()
    assert (await store.head("k")).etag == first.etag
    assert await read_bytes(store, "k") == b"old object"
    assert os.listdir(root / "tmp") == []
    data, meta = data_and_meta(root)
    assert len(data) == 1 and len(meta) == 1


@pytest_twisted.ensureDeferred
async def test_open_object_survives_overwrite_and_delete(store):
    """An object opened by get still reads whole after a concurrent overwrite and delete."""
    data = os.urandom(300_000)
    await put(store, "k", data)
    obj = await store.get("k")
    await put(store, "k", b"replacement")
    await store.delete("k")
    sink = io.BytesIO()
    await obj.deliver(FileConsumer(sink))
    assert sink.getvalue() == data
    assert await store.head("k") is None


@pytest_twisted.ensureDeferred
async def test_files_are_not_world_readable(store, root):
    """Data, manifests and directories get owner/group permissions only."""
    await put(store, "k", b"secret")
    for path in files_under(root):
        assert stat.S_IMODE(path.stat().st_mode) & 0o007 == 0
    for d, _, _ in os.walk(root):
        assert stat.S_IMODE(Path(d).stat().st_mode) & 0o007 == 0


@pytest_twisted.ensureDeferred
async def test_blocking_io_runs_off_the_reactor_thread(store):
    """The source is read in a pool thread, never on the reactor thread."""
    threads = []

    class Spy(io.BytesIO):
        def read(self, n: int | None = -1) -> bytes:
            threads.append(threading.current_thread())
            return super().read(n)

    await store.put("k", Spy(b"abc"), 3, "text/plain")
    assert threads and threading.main_thread() not in threads


# -- damaged manifests


@pytest_twisted.ensureDeferred
async def test_data_without_manifest_is_absent_and_deletable(store, root):
    """A data file whose put never committed is invisible, and delete removes its bytes."""
    await put(store, "k", b"uncommitted")
    [meta] = data_and_meta(root)[1]
    meta.unlink()
    assert await store.head("k") is None
    with pytest.raises(NotFound):
        await store.get("k")
    await store.delete("k")
    assert files_under(root / "objects") == []


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize(
    "garbage",
    [b"", b"{not json", b"\xff\xfe", b"[]", json.dumps({"data": "../../x", "etag": "e"}).encode()],
)
async def test_broken_manifest_reads_as_missing(store, root, garbage):
    """A broken manifest never crashes a read: head is None, get NotFound, put repairs it."""
    await put(store, "k", b"v1")
    [meta] = data_and_meta(root)[1]
    meta.write_bytes(garbage)
    assert await store.head("k") is None
    with pytest.raises(NotFound):
        await store.get("k")
    await put(store, "k", b"v2")
    assert await read_bytes(store, "k") == b"v2"
    await store.delete("k")
    assert files_under(root / "objects") == []


@pytest_twisted.ensureDeferred
async def test_manifest_without_data_reads_as_missing(store, root):
    """A manifest whose data file is gone reads as a missing object, not an error."""
    await put(store, "k", b"v1")
    [data] = data_and_meta(root)[0]
    data.unlink()
    assert await store.head("k") is None
    with pytest.raises(NotFound):
        await store.get("k")


# -- streaming


@implementer(IConsumer)
class PausingConsumer:
    """Pauses its producer after every write, like a full TCP buffer."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.producer = None
        self.writes_while_paused = 0
        self.paused = False

    def registerProducer(self, producer, streaming: bool) -> None:
        assert streaming
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        if self.paused:
            self.writes_while_paused += 1
        self.chunks.append(data)
        self.paused = True
        self.producer.pauseProducing()

    def resume(self) -> None:
        self.paused = False
        self.producer.resumeProducing()


@pytest_twisted.ensureDeferred
async def test_deliver_honours_back_pressure(store):
    """A paused consumer gets nothing more until it resumes, and then gets every byte."""
    data = os.urandom(5 * 64 * 1024 + 123)
    await put(store, "k", data)
    obj = await store.get("k")
    consumer = PausingConsumer()
    d = obj.deliver(consumer)
    while not d.called:
        await sleep(0.02)
        seen = len(consumer.chunks)
        await sleep(0.02)
        assert len(consumer.chunks) == seen  # still paused: nothing more arrived
        if consumer.producer is not None:
            consumer.resume()
    await d
    assert consumer.writes_while_paused == 0
    assert len(consumer.chunks) == 6
    assert b"".join(consumer.chunks) == data


class ServeOne(Resource):
    """Serves the object "k" the way the proxy does: deliver into the request."""

    isLeaf = True

    def __init__(self, store: LocalStore) -> None:
        super().__init__()
        self.store = store
        self.done: Deferred[None] = Deferred()

    def render_GET(self, request: Request) -> int:
        async def serve() -> None:
            obj = await self.store.get("k")
            request.setHeader(b"content-length", str(obj.info.size).encode())
            await obj.deliver(request)
            request.finish()

        Deferred.fromCoroutine(serve()).chainDeferred(self.done)
        return NOT_DONE_YET


@pytest_twisted.ensureDeferred
async def test_deliver_into_a_twisted_web_request(store):
    """A twisted.web Request works as the consumer: the whole body goes out, then finish."""
    data = os.urandom(1_000_000)
    await put(store, "k", data)
    resource = ServeOne(store)
    channel = Site(resource).buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(b"GET /k HTTP/1.1\r\nHost: avatars.test\r\n\r\n")
    await resource.done
    head, _, body = transport.value().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert body == data


@implementer(IConsumer)
class HangingUpConsumer:
    """Stops its producer after the first chunk, like an HTTP client that went away."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.producer = None

    def registerProducer(self, producer, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        self.chunks.append(data)
        self.producer.stopProducing()


@pytest_twisted.ensureDeferred
async def test_consumer_hang_up_stops_delivery(store):
    """When the consumer stops the producer, delivery ends with ConnectionLost and reads no more."""
    await put(store, "k", os.urandom(4 * 64 * 1024))
    obj = await store.get("k")
    consumer = HangingUpConsumer()
    with pytest.raises(ConnectionLost):
        await obj.deliver(consumer)
    await sleep(0.05)
    assert len(consumer.chunks) == 1
    assert consumer.producer is None


@pytest_twisted.ensureDeferred
async def test_deliver_twice_fails(store):
    """An object is delivered at most once; the second attempt fails instead of sending nothing."""
    await put(store, "k", b"abc")
    obj = await store.get("k")
    obj.abandon()
    with pytest.raises(RuntimeError):
        await obj.deliver(HangingUpConsumer())


# -- outages


@pytest_twisted.ensureDeferred
async def test_vanished_root_is_unavailable(store, root):
    """With its directory gone, ping and put fail with Unavailable (a 503), not a crash."""
    await store.ping()
    shutil.rmtree(root)
    with pytest.raises(Unavailable):
        await store.ping()
    with pytest.raises(Unavailable):
        await put(store, "k", b"x")
    assert await store.head("k") is None


def test_construction_sweeps_only_stale_temp_files(root):
    """A new store removes temp files a crash left long ago, not ones being written now."""
    LocalStore(root, reactor=reactor)
    stale, fresh = root / "tmp" / "stale.tmp", root / "tmp" / "fresh.tmp"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"y")
    os.utime(stale, (0, 0))
    LocalStore(root, reactor=reactor)
    assert sorted(os.listdir(root / "tmp")) == ["fresh.tmp"]


def test_build_local_lays_out_the_data_dir(tmp_path):
    """build_local makes both stores and the queue under data_dir, with the worker's limits."""
    from dataclasses import replace

    from profiled.config import Settings
    from profiled.drivers.local import LocalQueue, build_local

    settings = Settings()
    settings = replace(
        settings,
        local=replace(settings.local, data_dir=str(tmp_path / "var")),
        worker=replace(settings.worker, visibility_timeout=45, max_attempts=7),
    )
    drivers = build_local(settings, reactor)
    assert drivers.private.root == tmp_path / "var" / "private"
    assert drivers.public.root == tmp_path / "var" / "public"
    assert isinstance(drivers.queue, LocalQueue)
    assert (drivers.queue.visibility_timeout, drivers.queue.max_receives) == (45, 7)
    assert sorted(os.listdir(tmp_path / "var")) == ["private", "public", "queue"]


def test_small_object_is_read_with_the_open(tmp_path):
    """An avatar-sized object is read whole by get(), so deliver() needs no thread."""
    from profiled.drivers.consumers import FileConsumer
    from profiled.drivers.local.store import SMALL_OBJECT

    fake = InlineReactor()
    store = LocalStore(tmp_path / "s", reactor=fake)  # type: ignore[arg-type]
    data = b"x" * 5000
    store.put("k", io.BytesIO(data), len(data), "image/jpeg")
    assert len(data) <= SMALL_OBJECT
    fake.pool.calls = 0
    obj = store.get("k").result
    out = io.BytesIO()
    d = obj.deliver(FileConsumer(out))
    assert d.called
    assert out.getvalue() == data
    assert fake.pool.calls == 1


def test_delivery_into_a_file_is_one_thread_call(tmp_path):
    """A large object delivered into a real file is copied whole in one thread call
    (the worker's download of an original), after what the file already held."""
    from profiled.drivers.consumers import FileConsumer

    fake = InlineReactor()
    store = LocalStore(tmp_path / "s", reactor=fake)  # type: ignore[arg-type]
    data = os.urandom(3 * 1024 * 1024 + 17)
    store.put("k", io.BytesIO(data), len(data), "image/jpeg")
    target = tmp_path / "copy"
    with open(target, "wb") as sink:
        sink.write(b"head:")
        fake.pool.calls = 0
        obj = store.get("k").result
        done = obj.deliver(FileConsumer(sink))
        assert done.called and done.result is None
        assert fake.pool.calls == 2  # the open, the copy
        sink.write(b":tail")
    assert target.read_bytes() == b"head:" + data + b":tail"


def test_delivery_into_a_file_that_is_short_fails(tmp_path):
    """A data file shorter than its manifest says fails the copy with Unavailable."""
    from profiled.drivers.consumers import FileConsumer

    fake = InlineReactor()
    store = LocalStore(tmp_path / "s", reactor=fake)  # type: ignore[arg-type]
    data = os.urandom(200_000)
    store.put("k", io.BytesIO(data), len(data), "image/jpeg")
    obj = store.get("k").result
    (data_file,) = data_and_meta(tmp_path / "s")[0]
    os.truncate(data_file, 1000)
    with open(tmp_path / "copy", "wb") as sink:
        done = obj.deliver(FileConsumer(sink))
    failure = done.result
    done.addErrback(lambda _: None)
    assert failure.check(Unavailable)
