"""The local store's read cache: hits cost no thread, and never outlive the object.

Two LocalStores on one directory stand for two processes (a web role that
deletes, a proxy that serves): what one does must be seen by the other's
cache at once.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from twisted.python.failure import Failure

from profiled.drivers.consumers import FileConsumer
from profiled.drivers.local.cache import CachedObject, ReadCache, signature
from profiled.drivers.local.store import SMALL_OBJECT, LocalStore
from profiled.errors import NotFound
from profiled.interfaces import ObjectInfo
from tests.unit.inline_reactor import InlineReactor


def put(store: LocalStore, key: str, data: bytes) -> None:
    d = store.put(key, io.BytesIO(data), len(data), "image/jpeg")
    assert d.called and not isinstance(d.result, Failure)


def read(store: LocalStore, key: str) -> bytes:
    """The bytes of ``key`` through get() and deliver(); raises what get() fails with."""
    d = store.get(key)
    assert d.called, "a local get with an inline pool fires at once"
    result = d.result
    d.addErrback(lambda _: None)  # handled here
    if isinstance(result, Failure):
        result.raiseException()
    out = io.BytesIO()
    done = result.deliver(FileConsumer(out))
    assert done.called
    return out.getvalue()


@pytest.fixture
def fake() -> InlineReactor:
    return InlineReactor()


@pytest.fixture
def proxy_store(tmp_path: Path, fake: InlineReactor) -> LocalStore:
    """The proxy's view of the public store, with the cache on."""
    return LocalStore(tmp_path / "public", reactor=fake, cache_bytes=1024 * 1024)  # type: ignore[arg-type]


@pytest.fixture
def other_process(tmp_path: Path) -> LocalStore:
    """Another process's view of the same directory (the web role, a worker)."""
    return LocalStore(tmp_path / "public", reactor=InlineReactor())  # type: ignore[arg-type]


def test_a_hit_takes_no_thread(proxy_store, other_process, fake):
    """The first read goes to the thread pool once; the next ones are served from memory."""
    put(other_process, "a/1", b"avatar bytes")
    fake.pool.calls = 0
    assert read(proxy_store, "a/1") == b"avatar bytes"
    assert fake.pool.calls == 1
    for _ in range(3):
        assert read(proxy_store, "a/1") == b"avatar bytes"
    assert fake.pool.calls == 1


def test_delete_by_another_process_is_seen_at_once(proxy_store, other_process):
    """A cached object deleted elsewhere is NotFound on the very next read."""
    put(other_process, "a/1", b"avatar bytes")
    assert read(proxy_store, "a/1") == b"avatar bytes"
    other_process.delete("a/1")
    with pytest.raises(NotFound):
        read(proxy_store, "a/1")
    assert len(proxy_store._cache) == 0


def test_overwrite_by_another_process_is_seen_at_once(proxy_store, other_process):
    """A cached object replaced elsewhere, even by bytes of the same size, reads new."""
    put(other_process, "a/1", b"version one")
    assert read(proxy_store, "a/1") == b"version one"
    put(other_process, "a/1", b"version two")
    assert read(proxy_store, "a/1") == b"version two"
    info = proxy_store.get("a/1").result.info
    assert info.etag == other_process.head("a/1").result.etag


def test_info_of_a_hit_is_the_objects(proxy_store, other_process):
    """A hit carries the same info (etag, type, size) as a read from disk."""
    put(other_process, "a/1", b"avatar bytes")
    first = proxy_store.get("a/1").result.info
    second = proxy_store.get("a/1").result.info
    assert first == second == other_process.head("a/1").result


def test_large_objects_are_not_cached(proxy_store, other_process):
    """Objects above SMALL_OBJECT are streamed from disk every time."""
    data = os.urandom(SMALL_OBJECT + 1)
    put(other_process, "big", data)
    assert read(proxy_store, "big") == data
    assert len(proxy_store._cache) == 0


def test_cache_is_bounded_least_recently_used_first(tmp_path, other_process):
    """The cache holds at most its bytes; the least recently read object goes first."""
    store = LocalStore(tmp_path / "public", reactor=InlineReactor(), cache_bytes=3 * 1300)  # type: ignore[arg-type]
    for k in "abcd":
        put(other_process, k, k.encode() * 1000)
    for k in "abc":
        read(store, k)
    read(store, "a")  # a is now the most recent
    read(store, "d")  # over the bound: b, the least recent, goes
    assert store._cache.size <= 3 * 1300
    assert set(store._cache._entries) == {"c", "a", "d"}


def test_a_failing_stat_falls_back_to_the_store(proxy_store, other_process, monkeypatch):
    """A stat error other than a missing file leaves the answer to the normal read."""
    put(other_process, "a/1", b"avatar bytes")
    read(proxy_store, "a/1")
    real_stat = os.stat

    def broken_stat(path, *a, **kw):
        if str(path).endswith(".meta"):
            raise PermissionError(13, "denied")
        return real_stat(path, *a, **kw)

    monkeypatch.setattr(os, "stat", broken_stat)
    assert read(proxy_store, "a/1") == b"avatar bytes"


def test_cached_object_is_delivered_once(proxy_store, other_process):
    """A cached object, like any other, cannot be delivered twice."""
    put(other_process, "a/1", b"avatar bytes")
    read(proxy_store, "a/1")
    obj = proxy_store.get("a/1").result
    obj.deliver(FileConsumer(io.BytesIO()))
    second = obj.deliver(FileConsumer(io.BytesIO()))
    assert isinstance(second.result, Failure) and second.result.check(RuntimeError)
    second.addErrback(lambda _: None)


def test_read_cache_forgets_a_replaced_manifest(tmp_path):
    """ReadCache on its own: a changed file identity is a miss, a missing file raises."""
    manifest = tmp_path / "x.meta"
    manifest.write_text("{}")
    info = ObjectInfo(key="x", size=1, etag="e", content_type="image/png")
    cache = ReadCache(10_000)
    cache.remember("x", CachedObject(str(manifest), signature(os.stat(manifest)), info, b"1"))
    assert cache.lookup("x") is not None
    replacement = tmp_path / "x.new"
    replacement.write_text("{}")
    os.replace(replacement, manifest)
    assert cache.lookup("x") is None
    assert len(cache) == 0 and cache.size == 0
    cache.remember("x", CachedObject(str(manifest), signature(os.stat(manifest)), info, b"1"))
    manifest.unlink()
    with pytest.raises(FileNotFoundError):
        cache.lookup("x")
    assert len(cache) == 0 and cache.size == 0
