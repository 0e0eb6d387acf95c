"""The local object store: one directory tree, atomic puts, streamed gets.

Layout under ``root`` (docs/local-driver.md has the full story)::

    objects/<hh>/<name>.meta           the manifest: JSON info + the data file's name
    objects/<hh>/<name>.<token>.data   the bytes, exactly as put
    tmp/                               files being written

``<name>`` is the whole key percent-encoded into one flat file name (``/``
included), so no key can name a path outside ``root``; ``<hh>`` is a fan-out
directory taken from a hash of the key, so that no directory grows to
millions of entries.

The manifest is the commit point. A put writes and fsyncs the data under a
fresh unique name, then the manifest, renames the data into place, then the
manifest over the old one, and only then removes the old data. A reader
reads the manifest first and opens the data file it names, so it always
pairs bytes with their own etag, size and type: the old object, the new one
or none, never a mix. (Writing the metadata before the data, the other way
round, lets a reader pair new metadata with old bytes, and a CDN would then
cache the wrong bytes under a strong etag for a year.)

Every blocking call runs in a thread pool. Only the construction (a few
``mkdir``), closing a read-only file, the one ``stat`` with which the
optional read cache checks an object it holds (profiled.drivers.local.cache),
and the web role's writes into a body it spools (``spool()``: what it wrote
to a temporary file before) run on the reactor thread.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TypeVar

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IConsumer, IDelayedCall, IPushProducer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from profiled.drivers.consumers import FileConsumer
from profiled.drivers.keys import check_key
from profiled.drivers.local.cache import CachedObject, ReadCache, Signature, signature
from profiled.errors import NotFound, Unavailable
from profiled.interfaces import IAdoptingStore, ISpooledBody, IStoredObject, ObjectInfo

log = Logger()

T = TypeVar("T")

DIR_MODE = 0o750
FILE_MODE = 0o640
#: Bytes read per step when streaming a file out.
CHUNK = 64 * 1024
#: Objects up to this size are read whole when opened (avatars are a few KiB).
SMALL_OBJECT = 64 * 1024
#: Temp files older than this (seconds) are leftovers of a crash.
STALE_TMP_SECONDS = 3600.0
#: An encoded name longer than this is shortened with a hash (names stay < 255 bytes).
MAX_NAME = 180
_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
#: How often get/head re-read the manifest when its data file vanished under them.
_OPEN_ATTEMPTS = 3


class ThreadingReactor(Protocol):
    """What the local driver needs of a reactor: a clock and a thread pool.

    The real reactor provides it; tests may pass a ``Clock`` that runs
    "threads" inline.
    """

    def seconds(self) -> float: ...

    def callLater(
        self, delay: float, f: Callable[..., Any], *a: Any, **kw: Any
    ) -> IDelayedCall: ...

    def callFromThread(self, f: Callable[..., Any], *a: Any, **kw: Any) -> None: ...

    def getThreadPool(self) -> ThreadPool: ...


class Blocking:
    """Runs blocking filesystem calls off the reactor thread.

    ``OSError`` (disk full, read-only file system, I/O error...) becomes
    ``Unavailable``: the roles turn that into a 503 or a later retry.
    """

    def __init__(self, reactor: ThreadingReactor, threadpool: ThreadPool | None, what: str):
        self.reactor = reactor
        self.threadpool = threadpool
        self.what = what

    def __call__(self, f: Callable[..., T], *args: Any) -> Deferred[T]:
        pool = self.threadpool if self.threadpool is not None else self.reactor.getThreadPool()
        d = deferToThreadPool(self.reactor, pool, f, *args)  # type: ignore[arg-type]
        d.addErrback(self._unavailable)
        return d

    def _unavailable(self, failure: Failure) -> Failure:
        if failure.check(OSError):
            raise Unavailable(f"{self.what}: {failure.value}") from failure.value
        return failure


def fsync_dir(path: Path) -> None:
    """Make the entries of ``path`` (renames, new files) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(*paths: Path) -> None:
    """Create directories and their missing parents, all with ``DIR_MODE``.

    (``mkdir -p`` would give the parents, the data directory included, the
    default mode: often world-readable.)
    """
    for path in paths:
        missing = []
        while not path.is_dir():
            missing.append(path)
            path = path.parent
        for directory in reversed(missing):
            directory.mkdir(mode=DIR_MODE, exist_ok=True)


def sweep_tmp(tmp: Path, max_age: float = STALE_TMP_SECONDS) -> int:
    """Remove temp files left by a crash; return how many.

    Only files older than ``max_age`` go: another process sharing the
    directory may be writing a fresh one right now.
    """
    removed = 0
    cutoff = time.time() - max_age
    try:
        entries = list(os.scandir(tmp))
    except FileNotFoundError:
        return 0
    for entry in entries:
        try:
            if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                os.unlink(entry.path)
                removed += 1
        except FileNotFoundError:
            pass
    return removed


def encode_key(key: str) -> tuple[str, str]:
    """Return (fan-out directory, flat file name) for a checked key.

    Every byte outside ``[A-Za-z0-9_-]`` becomes ``%XX``, so the name has no
    ``/``, no ``.`` and cannot be ``..``: it can only name a file in its own
    directory. Long names keep a readable prefix and end with ``~`` and the
    key's SHA-256 (``~`` never appears in an encoded name, so the two forms
    cannot collide).
    """
    raw = key.encode("utf-8")
    digest = hashlib.sha256(raw).hexdigest()
    name = "".join(chr(b) if b in _SAFE else f"%{b:02X}" for b in raw)
    if len(name) > MAX_NAME:
        prefix = name[:100]
        cut = prefix.rfind("%", len(prefix) - 2)
        if cut != -1:
            prefix = prefix[:cut]
        name = f"{prefix}~{digest}"
    return digest[:2], name


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _copy_in(source: BinaryIO, length: int, fd: int) -> str:
    """Copy ``length`` bytes of ``source`` into ``fd``; return their etag."""
    digest = hashlib.sha256()
    left = length
    while left:
        chunk = source.read(min(CHUNK, left))
        if not chunk:
            raise ValueError(f"source ended after {length - left} of {length} bytes")
        digest.update(chunk)
        _write_all(fd, chunk)
        left -= len(chunk)
    return _etag(digest)


def _etag(digest: Any) -> str:
    """The etag of bytes from their SHA-256 (as the memory store makes it; S3 has its own)."""
    return str(digest.hexdigest()[:32])


def _read_manifest(path: Path) -> dict[str, Any] | None:
    """The manifest at ``path``; None when missing or unreadable (logged)."""
    read = _read_manifest_file(path)
    return None if read is None else read[0]


def _read_manifest_file(path: Path) -> tuple[dict[str, Any], Signature] | None:
    """The manifest at ``path`` and the identity of the file it was read from."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        st = os.fstat(fd)
        raw = os.read(fd, st.st_size + 1)
    finally:
        os.close(fd)
    try:
        doc = json.loads(raw)
        if not (
            isinstance(doc, dict)
            and isinstance(doc.get("data"), str)
            and "/" not in doc["data"]
            and doc["data"].endswith(".data")
            and isinstance(doc.get("etag"), str)
            and isinstance(doc.get("content_type"), str)
            and isinstance(doc.get("metadata", {}), dict)
        ):
            raise ValueError("missing or mistyped fields")
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError included
        log.warn("local store: ignoring broken manifest {path}: {error}", path=str(path), error=e)
        return None
    return doc, signature(st)


def _info(key: str, doc: Mapping[str, Any], size: int) -> ObjectInfo:
    return ObjectInfo(
        key=key,
        size=size,
        etag=doc["etag"],
        content_type=doc["content_type"],
        metadata={str(k): str(v) for k, v in doc.get("metadata", {}).items()},
        cache_control=doc.get("cache_control"),
    )


@implementer(IPushProducer)
class _FileProducer:
    """Streams an open file into a consumer, one chunk per thread call.

    A push producer: it reads the next chunk only while the consumer is not
    paused, so a slow HTTP client holds at most one chunk in memory, and the
    reading happens off the reactor thread.
    """

    def __init__(self, f: BinaryIO, size: int, consumer: IConsumer, blocking: Blocking):
        self.file = f
        self.remaining = size
        self.consumer = consumer
        self.blocking = blocking
        self.done: Deferred[None] = Deferred()
        self.paused = False
        self.reading = False
        self.finished = False

    def start(self) -> Deferred[None]:
        self.consumer.registerProducer(self, True)
        self._pump()
        return self.done

    def _pump(self) -> None:
        if self.paused or self.reading or self.finished:
            return
        if self.remaining <= 0:
            self._finish(None)
            return
        self.reading = True
        d = self.blocking(self.file.read, min(CHUNK, self.remaining))
        d.addCallbacks(self._got, self._failed)

    def _got(self, data: bytes) -> None:
        self.reading = False
        if self.finished:
            self.file.close()
            return
        if not data:
            self._finish(Failure(Unavailable(f"file ended {self.remaining} bytes early")))
            return
        self.remaining -= len(data)
        self.consumer.write(data)
        self._pump()

    def _failed(self, failure: Failure) -> None:
        self.reading = False
        if self.finished:
            self.file.close()
            return
        self._finish(failure)

    def _finish(self, result: Failure | None) -> None:
        if self.finished:
            return
        self.finished = True
        if not self.reading:
            self.file.close()
        self.consumer.unregisterProducer()
        if result is None:
            self.done.callback(None)
        else:
            self.done.errback(result)

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self._pump()

    def stopProducing(self) -> None:
        """The consumer went away (an HTTP client hung up): stop and say so."""
        self._finish(Failure(ConnectionLost("the consumer stopped the transfer")))


@implementer(IStoredObject)
class _LocalObject:
    """An object whose data file is already open, so a later delete or overwrite
    cannot pull it away mid-read (the inode lives until we close it)."""

    def __init__(self, info: ObjectInfo, f: BinaryIO, blocking: Blocking) -> None:
        self.info = info
        self._file: BinaryIO | None = f
        self._blocking = blocking

    def deliver(self, consumer: IConsumer) -> Deferred[None]:
        f, self._file = self._file, None
        if f is None:
            return defer.fail(RuntimeError("deliver() after deliver() or abandon()"))
        if self.info.size == 0:
            f.close()
            return defer.succeed(None)
        sink = _real_file(consumer)
        if sink is not None:
            # Into a file on disk (the worker fetching an original): one thread
            # call, copied by the kernel, instead of a hop per 64 KiB chunk.
            return self._blocking(_copy_file, f, sink, self.info.size)
        return _FileProducer(f, self.info.size, consumer, self._blocking).start()

    def abandon(self) -> None:
        f, self._file = self._file, None
        if f is not None:
            f.close()


def _real_file(consumer: IConsumer) -> BinaryIO | None:
    """The file behind a FileConsumer, if it is a real one (it has a descriptor)."""
    if not isinstance(consumer, FileConsumer):
        return None
    try:
        consumer.sink.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        return None
    return consumer.sink


def _copy_file(source: BinaryIO, sink: BinaryIO, size: int) -> None:
    """Copy ``size`` bytes of ``source`` to the end of what ``sink`` holds, then close
    ``source``. sendfile(2) copies file to file inside the kernel (Linux >= 2.6.33)."""
    try:
        sink.flush()
        start = sink.tell()
        out_fd, in_fd = sink.fileno(), source.fileno()
        done = 0
        try:
            while done < size:
                sent = os.sendfile(out_fd, in_fd, done, size - done)
                if sent == 0:
                    raise Unavailable(f"data file ended {size - done} bytes early")
                done += sent
        except OSError as e:
            if done or e.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                raise
            shutil.copyfileobj(source, sink, CHUNK)  # no sendfile between these files
            return
        sink.seek(start + size)  # the buffered file learns where the descriptor is now
    finally:
        source.close()


@implementer(IStoredObject)
class _SmallObject:
    """An object read whole when it was opened (an avatar: a few KiB): written
    out in one call, no file held, no further thread hop."""

    def __init__(self, info: ObjectInfo, data: bytes, read_from: CachedObject | None = None):
        self.info = info
        self._data: bytes | None = data
        #: What the read cache may keep of it (None: not cacheable).
        self.read_from = read_from

    def deliver(self, consumer: IConsumer) -> Deferred[None]:
        data, self._data = self._data, None
        if data is None:
            return defer.fail(RuntimeError("deliver() after deliver() or abandon()"))
        if data:
            consumer.write(data)
        return defer.succeed(None)

    def abandon(self) -> None:
        self._data = None


@implementer(ISpooledBody)
class _SpooledBody:
    """An upload written into the store's ``tmp/`` as it arrives, hashed on the way.

    The web role writes it on the reactor thread, chunk by chunk (as it wrote
    an anonymous temporary file before); ``LocalStore.adopt`` then fsyncs and
    renames it into place instead of copying the bytes once more.
    """

    def __init__(self, path: Path, fd: int, tmp: Path) -> None:
        self.path = path
        self.tmp = tmp
        self.size = 0
        self._fd: int | None = fd
        self._digest = hashlib.sha256()

    def write(self, data: bytes) -> None:
        if self._fd is None:
            raise ValueError("write to a spooled body that is adopted or discarded")
        _write_all(self._fd, data)
        self._digest.update(data)
        self.size += len(data)

    def discard(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
            unlink_if_there(self.path)

    def hand_over(self) -> tuple[Path, int, str]:
        """Give up the file to the adopter: (path, open fd, etag)."""
        fd, self._fd = self._fd, None
        if fd is None:
            raise ValueError("the spooled body is already adopted or discarded")
        return self.path, fd, _etag(self._digest)


@implementer(IAdoptingStore)
class LocalStore:
    """An IStore in a directory on a local (POSIX) file system.

    Also an IAdoptingStore: an upload spooled into ``tmp/`` becomes an object
    by a rename, not a second copy of its bytes.
    """

    def __init__(
        self,
        root: Path,
        reactor: ThreadingReactor,
        threadpool: ThreadPool | None = None,
        cache_bytes: int = 0,
    ) -> None:
        """``cache_bytes`` > 0 keeps objects read with ``get`` of at most
        ``SMALL_OBJECT`` bytes in memory, checked against the disk on every
        read (profiled.drivers.local.cache)."""
        self.root = Path(root)
        self.objects = self.root / "objects"
        self.tmp = self.root / "tmp"
        self._blocking = Blocking(reactor, threadpool, f"local store {self.root}")
        self._fanout_made: set[str] = set()
        self._cache = ReadCache(cache_bytes) if cache_bytes > 0 else None
        make_dirs(self.objects, self.tmp)
        sweep_tmp(self.tmp)

    # -- paths

    def _paths(self, key: str) -> tuple[Path, str]:
        """The fan-out directory of ``key`` and its encoded file name."""
        fanout, name = encode_key(key)
        return self.objects / fanout, name

    def _new_tmp(self) -> tuple[Path, int]:
        path = self.tmp / f"{secrets.token_hex(12)}.tmp"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        return path, fd

    # -- IStore

    def put(
        self,
        key: str,
        source: BinaryIO,
        length: int,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
        cache_control: str | None = None,
    ) -> Deferred[ObjectInfo]:
        try:
            check_key(key)
            if length < 0:
                raise ValueError(f"negative length {length}")
        except Exception:
            return defer.fail()
        return self._blocking(
            self._put, key, source, length, content_type, dict(metadata or {}), cache_control
        )

    def _put(
        self,
        key: str,
        source: BinaryIO,
        length: int,
        content_type: str,
        metadata: dict[str, str],
        cache_control: str | None,
    ) -> ObjectInfo:
        data_tmp, fd = self._new_tmp()
        try:
            etag = _copy_in(source, length, fd)
        except BaseException:
            os.close(fd)
            unlink_if_there(data_tmp)
            raise
        return self._adopt(key, data_tmp, fd, length, etag, content_type, metadata, cache_control)

    def _commit(
        self,
        key: str,
        data_tmp: Path,
        size: int,
        etag: str,
        content_type: str,
        metadata: dict[str, str],
        cache_control: str | None,
    ) -> ObjectInfo:
        """Make the durable data file ``data_tmp`` the object ``key``: write the
        manifest, rename both into place (the manifest last: the commit), fsync
        the directory, remove the old data. Removes ``data_tmp`` on failure."""
        directory, name = self._paths(key)
        data_name = f"{name}.{secrets.token_hex(8)}.data"
        cleanup: list[Path] = [data_tmp]
        try:
            info = ObjectInfo(
                key=key,
                size=size,
                etag=etag,
                content_type=content_type,
                metadata=metadata,
                cache_control=cache_control,
            )
            manifest = {
                "key": key,
                "data": data_name,
                "size": size,
                "etag": info.etag,
                "content_type": content_type,
                "metadata": metadata,
                "cache_control": cache_control,
            }
            meta_tmp, fd = self._new_tmp()
            cleanup.append(meta_tmp)
            try:
                _write_all(fd, json.dumps(manifest, ensure_ascii=False).encode("utf-8"))
                os.fsync(fd)
            finally:
                os.close(fd)
            self._make_fanout(directory)
            meta_path = directory / f"{name}.meta"
            old = _read_manifest(meta_path)
            os.rename(data_tmp, directory / data_name)
            cleanup[0] = directory / data_name
            # The commit: from here on readers see the new object.
            os.rename(meta_tmp, meta_path)
            cleanup.clear()
            fsync_dir(directory)
        except BaseException:
            for path in cleanup:
                unlink_if_there(path)
            raise
        if old is not None and old["data"] != data_name:
            unlink_if_there(directory / old["data"])
        return info

    # -- IAdoptingStore: an upload written once, straight into tmp/

    def spool(self) -> ISpooledBody:
        """A new file in ``tmp/`` for a body arriving now (created on the caller's
        thread: one ``open``, as a temporary file would cost)."""
        path, fd = self._new_tmp()
        return _SpooledBody(path, fd, self.tmp)

    def adopt(
        self,
        key: str,
        body: ISpooledBody,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
        cache_control: str | None = None,
    ) -> Deferred[ObjectInfo]:
        try:
            check_key(key)
            if not isinstance(body, _SpooledBody) or body.tmp != self.tmp:
                raise TypeError("adopt takes a body spooled by this store")
            path, fd, etag = body.hand_over()
        except Exception:
            if isinstance(body, _SpooledBody):
                body.discard()
            return defer.fail()
        return self._blocking(
            self._adopt,
            key,
            path,
            fd,
            body.size,
            etag,
            content_type,
            dict(metadata or {}),
            cache_control,
        )

    def _adopt(
        self,
        key: str,
        path: Path,
        fd: int,
        size: int,
        etag: str,
        content_type: str,
        metadata: dict[str, str],
        cache_control: str | None,
    ) -> ObjectInfo:
        """Make the complete data file ``path`` in ``tmp/`` (open as ``fd``)
        durable, close it, and commit it as ``key`` (``put`` ends here too)."""
        try:
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except BaseException:
            unlink_if_there(path)
            raise
        return self._commit(key, path, size, etag, content_type, metadata, cache_control)

    def _make_fanout(self, directory: Path) -> None:
        if directory.name in self._fanout_made:
            return
        try:
            directory.mkdir(mode=DIR_MODE)
        except FileExistsError:
            pass
        else:
            fsync_dir(self.objects)
        self._fanout_made.add(directory.name)

    def _open(self, key: str) -> tuple[ObjectInfo, BinaryIO, str, Signature] | None:
        """Open the current data file of ``key``, or None.

        Returns the object's info, the open file, and the path and identity
        of the manifest it was found through (for the read cache).
        """
        directory, name = self._paths(key)
        manifest = str(directory / f"{name}.meta")
        for _ in range(_OPEN_ATTEMPTS):
            read = _read_manifest_file(Path(manifest))
            if read is None:
                return None
            doc, sig = read
            try:
                f = open(directory / doc["data"], "rb")  # closed by the object
            except FileNotFoundError:
                continue  # an overwrite or delete got in between: read the manifest again
            size = os.fstat(f.fileno()).st_size
            return _info(key, doc, size), f, manifest, sig
        log.warn("local store: manifest of {key!r} names a missing data file", key=key)
        return None

    def head(self, key: str) -> Deferred[ObjectInfo | None]:
        try:
            check_key(key)
        except Exception:
            return defer.fail()
        return self._blocking(self._head, key)

    def _head(self, key: str) -> ObjectInfo | None:
        opened = self._open(key)
        if opened is None:
            return None
        info, f, _, _ = opened
        f.close()
        return info

    def get(self, key: str) -> Deferred[IStoredObject]:
        if self._cache is not None:
            try:
                entry = self._cache.lookup(key)
            except FileNotFoundError:
                return defer.fail(NotFound(key))
            except OSError:
                entry = None  # the slow way below says what is wrong
            if entry is not None:
                return defer.succeed(_SmallObject(entry.info, entry.data))
        try:
            check_key(key)
        except Exception:
            return defer.fail()
        d = self._blocking(self._get, key)
        if self._cache is not None:
            d.addCallback(self._remember)
        return d

    def _get(self, key: str) -> IStoredObject:
        opened = self._open(key)
        if opened is None:
            raise NotFound(key)
        info, f, manifest, sig = opened
        if info.size > SMALL_OBJECT:
            return _LocalObject(info, f, self._blocking)
        # Small: read whole in the same thread call as the open, one thread
        # hop per avatar instead of two or more.
        with f:
            data = f.read(info.size + 1)
        if len(data) != info.size:
            raise Unavailable(f"{key}: data file is {len(data)} bytes, not {info.size}")
        return _SmallObject(info, data, CachedObject(manifest, sig, info, data))

    def _remember(self, obj: IStoredObject) -> IStoredObject:
        """Keep a small object just read in the read cache (on the reactor thread)."""
        if self._cache is not None and isinstance(obj, _SmallObject) and obj.read_from:
            self._cache.remember(obj.info.key, obj.read_from)
        return obj

    def delete(self, key: str) -> Deferred[None]:
        try:
            check_key(key)
        except Exception:
            return defer.fail()
        return self._blocking(self._delete, key)

    def _delete(self, key: str) -> None:
        """Remove the manifest (the commit), then every data file of the key.

        Data files without a manifest (a put cut short by a crash) go too:
        a delete must leave none of the user's bytes behind.
        """
        directory, name = self._paths(key)
        removed = unlink_if_there(directory / f"{name}.meta")
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            return
        prefix = f"{name}."
        for entry in names:
            if entry.startswith(prefix) and entry.endswith(".data"):
                removed = unlink_if_there(directory / entry) or removed
        if removed:
            fsync_dir(directory)

    def ping(self) -> Deferred[None]:
        return self._blocking(self._ping)

    def _ping(self) -> None:
        if not self.objects.is_dir():
            raise Unavailable(f"local store: {self.objects} is not a directory")
        path, fd = self._new_tmp()
        os.close(fd)
        os.unlink(path)


def unlink_if_there(path: Path) -> bool:
    """Remove ``path``; True if it was there."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True
