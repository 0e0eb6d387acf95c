"""A memory cache of small objects that is checked against the disk on every read.

The proxy role reads the same few-KiB variants over and over. Reading one
from a LocalStore costs a thread-pool hop, the manifest (open, read, JSON)
and the data file; keeping the bytes in memory saves all of that. What it
must not do is serve an object after it was deleted or replaced, by this
process or by another one sharing the directory (a web role's DELETE is
answered 404 by every proxy at once: API.md). So an entry is only used
after one ``stat`` of the object's manifest shows that the manifest is
still the very file the entry was read from.

A manifest is never written in place: a put writes a new file and renames
it over the old one, a delete unlinks it. The identity of the file is
therefore enough: its inode, size, and modification and change times
(:func:`signature`). The last two move with every put even when a freed
inode is handed out again, and the size guards the rest.

The cache is bounded by the bytes it holds and drops the least recently
used entries first. It is used from the reactor thread only; the one
``stat`` per hit runs there too (a few microseconds on a local file
system: the same trade twisted.web's static.File and nginx make).
"""

from __future__ import annotations

import os
from collections import OrderedDict

import attrs

from profiled.interfaces import ObjectInfo

#: What identifies one version of a manifest file.
Signature = tuple[int, int, int, int]


def signature(st: os.stat_result) -> Signature:
    """The identity of a manifest file, from its ``stat``."""
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@attrs.frozen
class CachedObject:
    """One object held in memory, with the manifest it was read under."""

    manifest: str
    signature: Signature
    info: ObjectInfo
    data: bytes


class ReadCache:
    """Objects by key, least recently used dropped first, at most ``max_bytes``."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._entries: OrderedDict[str, CachedObject] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, key: str) -> CachedObject | None:
        """The entry of ``key`` if its manifest is unchanged on disk.

        Returns None (and forgets the entry) when the manifest was replaced;
        raises ``FileNotFoundError`` (having forgotten the entry) when it is
        gone: the object was deleted. Other ``OSError``s propagate and the
        entry stays: the caller reads the store the slow way.
        """
        entry = self._entries.get(key)
        if entry is None:
            return None
        try:
            current = signature(os.stat(entry.manifest))
        except FileNotFoundError:
            self.forget(key)
            raise
        if current != entry.signature:
            self.forget(key)
            return None
        self._entries.move_to_end(key)
        return entry

    def remember(self, key: str, entry: CachedObject) -> None:
        """Keep ``entry``, dropping the least recently used ones over the bound."""
        size = _cost(entry)
        if size > self.max_bytes:
            return
        self.forget(key)
        self._entries[key] = entry
        self.size += size
        while self.size > self.max_bytes:
            oldest = next(iter(self._entries))
            self.forget(oldest)

    def forget(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.size -= _cost(entry)


def _cost(entry: CachedObject) -> int:
    """The bytes an entry is counted for: its data, plus its own overhead, roughly."""
    return len(entry.data) + len(entry.manifest) + 200
