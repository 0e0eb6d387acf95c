"""The fuzz target shared by the hypothesis tests and the atheris run.

``check(data)`` reads its first byte as a format hint and the next two as a
chunking seed, builds an upload from the rest (with a real signature in
front, so the fuzzer reaches the header parsers quickly), and feeds it to
``sniff``/``read_header`` and to an ``UploadSpool`` in two chunkings, whose
verdicts must agree. It raises ``AssertionError`` when a property breaks, and lets any other
exception through: both are findings.

Run by atheris: ``python -m tests.hostile.atheris_main -runs=N [corpus dir]``.
"""

from __future__ import annotations

import random

from profiled.crunch.sniff import (
    FORMATS,
    HeaderError,
    HeaderInfo,
    ImageLimits,
    read_header,
    sniff,
)
from profiled.web.spool import UploadSpool

ALLOWED = ("jpeg", "png", "gif", "webp", "avif")
LIMITS = ImageLimits(max_pixels=1_000_000, max_side=4000, max_frames=50)
MAX_BYTES = 64 * 1024
PREFIXES = (
    b"",
    b"\xff\xd8\xff",
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR",
    b"GIF89a",
    b"RIFF\x00\x10\x00\x00WEBPVP8X",
    b"\x00\x00\x00\x1cftypavif",
)
TYPES = ("", "image/jpeg", "image/png", "image/gif", "image/webp", "image/avif", "text/html")
REFUSALS = {400, 413, 415, 422}


def build(data: bytes) -> tuple[bytes, str, int]:
    """(body, declared type, chunking seed) from raw fuzzer bytes."""
    hint = data[0] if data else 0
    seed = int.from_bytes(data[1:3], "big")
    body = PREFIXES[hint % len(PREFIXES)] + data[3:]
    return body, TYPES[(hint // len(PREFIXES)) % len(TYPES)], seed


def verdict(body: bytes, content_type: str, chunks: list[int]) -> tuple[object, ...]:
    """Feed an UploadSpool; what it decided and what it saw."""
    spool = UploadSpool(MAX_BYTES, LIMITS, ALLOWED, content_type)
    pos = 0
    for size in chunks:
        spool.write(body[pos : pos + size])
        pos += size
    if pos < len(body):
        spool.write(body[pos:])
    error = spool.finish()
    if error is None:
        spool.seek(0)
        assert spool.read() == body, "the spooled body differs from the upload"
        assert spool.format in ALLOWED
        result: tuple[object, ...] = ("accepted", spool.format)
    else:
        assert error.code in REFUSALS, error
        result = (error.code,)
    spool.close()
    return result


def chunking(n: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    sizes = []
    while n > 0:
        size = min(n, rng.choice((1, 1, 3, 17, 100, 1000)))
        sizes.append(size)
        n -= size
    return sizes


def check(data: bytes) -> None:
    """All properties on one input (see the module docstring)."""
    body, content_type, seed = build(data)
    fmt = sniff(body)
    assert fmt is None or fmt in FORMATS
    for name in ALLOWED:
        try:
            info = read_header(body, name)
        except HeaderError:
            continue
        assert info is None or (isinstance(info, HeaderInfo) and info.width >= 1 <= info.height)
    whole = verdict(body, content_type, [len(body)])
    chunked = verdict(body, content_type, chunking(len(body), seed))
    # A file both malformed and over a limit may be refused for either, by
    # whichever shows first (415 or 422); whether it is refused may not change.
    assert (chunked[0] == "accepted") == (whole[0] == "accepted"), "chunking changed it"
    assert chunked == whole or {chunked[0], whole[0]} <= {415, 422}, "chunking changed it"
