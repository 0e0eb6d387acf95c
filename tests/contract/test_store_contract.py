"""The store contract: every driver behaves the same for every case here."""

from __future__ import annotations

import io

import pytest
import pytest_twisted
from zope.interface.verify import verifyObject

from profiled.drivers.consumers import read_bytes
from profiled.errors import InvalidKey, NotFound
from profiled.interfaces import IAdoptingStore, IStore

ODD_KEYS = [
    "originals/0123456789abcdef0123456789abcdef",
    "with space/and+plus~tilde",
    "ünïcødé/画像/ключ",
    "a=b&c;d,e@f:g$h!(i)'j*k",
    "percent%20literal",
]


@pytest_twisted.ensureDeferred
async def test_provides_interface(make_store):
    """Every store provides IStore."""
    store = await make_store()
    assert verifyObject(IStore, store)


@pytest_twisted.ensureDeferred
async def test_put_then_get_round_trips_bytes_and_info(make_store):
    """What is put comes back byte for byte with its type, metadata and cache control."""
    store = await make_store()
    data = bytes(range(256)) * 1000
    info = await store.put(
        "k1", io.BytesIO(data), len(data), "image/png", {"owner": "alice"}, "public, max-age=60"
    )
    assert info.size == len(data)
    assert info.etag
    assert await read_bytes(store, "k1") == data
    head = await store.head("k1")
    assert head is not None
    assert head.size == len(data)
    assert head.content_type == "image/png"
    assert head.metadata.get("owner") == "alice"
    assert head.cache_control == "public, max-age=60"
    assert head.etag == info.etag


@pytest_twisted.ensureDeferred
async def test_put_reads_only_length_bytes_from_current_position(make_store):
    """put takes exactly `length` bytes from the source's current position."""
    store = await make_store()
    source = io.BytesIO(b"skipHELLOtrailing")
    source.seek(4)
    await store.put("k", source, 5, "application/octet-stream")
    assert await read_bytes(store, "k") == b"HELLO"


@pytest_twisted.ensureDeferred
async def test_empty_object(make_store):
    """A zero-byte object is an object, not a missing one."""
    store = await make_store()
    await store.put("empty", io.BytesIO(b""), 0, "application/json")
    info = await store.head("empty")
    assert info is not None and info.size == 0
    assert await read_bytes(store, "empty") == b""


@pytest_twisted.ensureDeferred
async def test_overwrite_replaces_whole_object(make_store):
    """A second put under the same key replaces the first, etag included."""
    store = await make_store()
    first = await store.put("k", io.BytesIO(b"first version"), 13, "text/plain")
    assert await read_bytes(store, "k") == b"first version"  # read (and cached, if it caches)
    second = await store.put("k", io.BytesIO(b"2nd"), 3, "text/plain")
    assert await read_bytes(store, "k") == b"2nd"
    assert await read_bytes(store, "k") == b"2nd"
    assert first.etag != second.etag
    assert (await store.head("k")).etag == second.etag


@pytest_twisted.ensureDeferred
async def test_same_bytes_same_etag(make_store):
    """The etag depends on the bytes only, so duplicate work yields the same etag."""
    store = await make_store()
    a = await store.put("a", io.BytesIO(b"same"), 4, "text/plain")
    b = await store.put("b", io.BytesIO(b"same"), 4, "text/plain")
    assert a.etag == b.etag


@pytest_twisted.ensureDeferred
async def test_missing_key(make_store):
    """head of a missing key is None and get fails with NotFound."""
    store = await make_store()
    assert await store.head("nothing-here") is None
    with pytest.raises(NotFound):
        await store.get("nothing-here")


@pytest_twisted.ensureDeferred
async def test_delete_is_idempotent(make_store):
    """delete removes the object; deleting again or a missing key succeeds."""
    store = await make_store()
    await store.put("gone", io.BytesIO(b"x"), 1, "text/plain")
    assert await read_bytes(store, "gone") == b"x"  # read (and cached, if it caches)
    await store.delete("gone")
    assert await store.head("gone") is None
    with pytest.raises(NotFound):
        await store.get("gone")
    await store.delete("gone")
    await store.delete("never-was")


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("key", ODD_KEYS)
async def test_odd_keys_round_trip(make_store, key):
    """Keys with spaces, +, ~, punctuation and non-ASCII work for every operation."""
    store = await make_store()
    await store.put(key, io.BytesIO(key.encode()), len(key.encode()), "text/plain")
    assert (await store.head(key)).size == len(key.encode())
    assert await read_bytes(store, key) == key.encode()
    await store.delete(key)
    assert await store.head(key) is None


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize(
    "key",
    ["", "/abs", "a//b", "a/../b", "..", "a/./b", "tab\there", "nul\x00", "back\\slash", "x" * 201],
)
async def test_bad_keys_are_refused(make_store, key):
    """Keys that could escape a namespace or confuse a driver fail with InvalidKey."""
    store = await make_store()
    with pytest.raises(InvalidKey):
        await store.put(key, io.BytesIO(b"x"), 1, "text/plain")
    with pytest.raises(InvalidKey):
        await store.head(key)
    with pytest.raises(InvalidKey):
        await store.get(key)


@pytest_twisted.ensureDeferred
async def test_keys_do_not_collide_with_prefixes(make_store):
    """'a' and 'a/b' are independent objects."""
    store = await make_store()
    await store.put("a/b", io.BytesIO(b"child"), 5, "text/plain")
    await store.put("a", io.BytesIO(b"parent"), 6, "text/plain")
    assert await read_bytes(store, "a") == b"parent"
    assert await read_bytes(store, "a/b") == b"child"


@pytest_twisted.ensureDeferred
async def test_large_object_streams(make_store):
    """A multi-megabyte object goes in and out intact."""
    store = await make_store()
    data = (b"0123456789abcdef" * 65536) * 5  # 5 MiB
    await store.put("big", io.BytesIO(data), len(data), "application/octet-stream")
    got = await read_bytes(store, "big", limit=len(data))
    assert len(got) == len(data) and got == data


@pytest_twisted.ensureDeferred
async def test_abandon_without_reading(make_store):
    """An opened object can be abandoned (HEAD, 304) and the store still works."""
    store = await make_store()
    await store.put("k", io.BytesIO(b"abc"), 3, "text/plain")
    obj = await store.get("k")
    assert obj.info.size == 3
    obj.abandon()
    assert await read_bytes(store, "k") == b"abc"


@pytest_twisted.ensureDeferred
async def test_ping(make_store):
    """A reachable store answers ping."""
    store = await make_store()
    await store.ping()


async def adopting_store(make_store):
    """A fresh store of the driver, or a skip when it cannot adopt spooled bodies."""
    store = await make_store()
    if not IAdoptingStore.providedBy(store):
        pytest.skip("this driver has no IAdoptingStore: the web role uses put")
    return store


@pytest_twisted.ensureDeferred
async def test_adopted_body_equals_a_put_of_the_same_bytes(make_store):
    """A body written chunk by chunk and adopted reads back as a put of the same bytes would."""
    store = await adopting_store(make_store)
    assert verifyObject(IAdoptingStore, store)
    data = bytes(range(256)) * 700
    body = store.spool()
    for i in range(0, len(data), 65536):
        body.write(data[i : i + 65536])
    assert body.size == len(data)
    adopted = await store.adopt("k1", body, "image/png", {"owner": "alice"}, "public")
    put = await store.put("k2", io.BytesIO(data), len(data), "image/png")
    assert adopted.etag == put.etag and adopted.size == len(data)
    assert await read_bytes(store, "k1") == data
    head = await store.head("k1")
    assert head is not None and head.etag == adopted.etag
    assert head.metadata.get("owner") == "alice" and head.cache_control == "public"
    body.discard()  # used up by adopt: a no-op
    assert await read_bytes(store, "k1") == data


@pytest_twisted.ensureDeferred
async def test_adopt_replaces_an_existing_object(make_store):
    """Adopting under a key that exists replaces the whole object."""
    store = await adopting_store(make_store)
    await store.put("k", io.BytesIO(b"first version"), 13, "text/plain")
    body = store.spool()
    body.write(b"2nd")
    info = await store.adopt("k", body, "text/plain")
    assert await read_bytes(store, "k") == b"2nd"
    assert (await store.head("k")).etag == info.etag


@pytest_twisted.ensureDeferred
async def test_discarded_or_refused_bodies_store_nothing(make_store):
    """A discarded body cannot be adopted; one adopted under a bad key is used up."""
    store = await adopting_store(make_store)
    body = store.spool()
    body.write(b"abc")
    body.discard()
    body.discard()
    with pytest.raises(ValueError):
        await store.adopt("k", body, "text/plain")
    assert await store.head("k") is None
    body = store.spool()
    body.write(b"abc")
    with pytest.raises(InvalidKey):
        await store.adopt("../k", body, "text/plain")
    with pytest.raises(ValueError):
        body.write(b"more")
