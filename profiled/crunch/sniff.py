"""Recognise an upload from its first bytes, without decoding it.

The web role calls this on untrusted bytes while the body is still arriving, so
that it can refuse a wrong format or an image bomb before anything is stored.
That shapes the code: pure Python (no Pillow, whose parsers are not meant for
half a file), every read bounds-checked, every loop bounded by the bytes given,
nothing allocated from a size the file declares, and no exception other than
``HeaderError`` escaping on any input.

The worker runs the same checks again before Pillow sees the file, and checks
Pillow's own idea of the size after opening it; this module is the early,
cheap line of defence, not the only one.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator

import attrs

#: The allowed formats, by the name used everywhere in profiled, with their media type.
FORMATS: dict[str, str] = {
    "jpeg": "image/jpeg",
    "png": "image/png",
    "gif": "image/gif",
    "webp": "image/webp",
    "avif": "image/avif",
}

#: Bytes that are always enough for ``sniff()``.
SNIFF_BYTES = 32

#: A caller gives up looking for the dimensions after this many bytes. A JPEG may
#: legitimately carry a few hundred KiB of EXIF thumbnail and ICC profile before its
#: frame header, so this is generous; when ``read_header`` still answers ``None``
#: with this much, the decision is left to the worker, which checks again.
HEADER_BYTES_MAX = 256 * 1024

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_AVIF_BRANDS = (b"avif", b"avis")

# JPEG start-of-frame markers: C0-CF except DHT (C4), JPG (C8) and DAC (CC).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers that stand alone, without a length: TEM, RST0-7, SOI, EOI.
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8), 0xD8, 0xD9})

# PNG colour type -> allowed bit depths (PNG spec, table 11.1).
_PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
_PNG_MAX_SIDE = 2**31 - 1


class HeaderError(ValueError):
    """The bytes claim an allowed format but their header is malformed.

    ``str(e)`` is a short human reason, safe to show a client.
    """


@attrs.frozen
class HeaderInfo:
    """What the header of an image says about it.

    ``frames`` is ``None`` when it cannot be known from the bytes given (a long
    animated GIF or WebP); the worker counts frames after opening the file.
    """

    format: str
    width: int
    height: int
    frames: int | None


@attrs.frozen
class ImageLimits:
    """The largest image profiled agrees to decode (API.md "Limits")."""

    max_pixels: int = 50_000_000
    max_side: int = 20_000
    max_frames: int = 1000


def sniff(head: bytes) -> str | None:
    """Name the format of ``head`` from its magic bytes, or ``None`` if not allowed.

    Only the formats in ``FORMATS`` are recognised: SVG, HTML, ZIP, BMP, TIFF,
    HEIC and anything else give ``None``, whatever the client declared. Fewer
    bytes than a signature also give ``None``; ``SNIFF_BYTES`` is always enough.
    """
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(_PNG_SIGNATURE):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if len(head) >= 12 and head[4:8] == b"ftyp":
        # ISO BMFF: the major brand, then (after a minor version) compatible brands.
        size = struct.unpack(">I", head[:4])[0]
        end = min(size, len(head), SNIFF_BYTES)
        brands = [head[8:12]] + [head[i : i + 4] for i in range(16, end - 3, 4)]
        if any(brand in _AVIF_BRANDS for brand in brands):
            return "avif"
    return None


def read_header(head: bytes, fmt: str) -> HeaderInfo | None:
    """Read the dimensions (and frame count when cheap) from the start of a file.

    ``head`` is the first bytes of the file, ``fmt`` what ``sniff()`` said.
    Returns ``None`` when more bytes are needed; at the end of the file that
    means the header is truncated, and at ``HEADER_BYTES_MAX`` that the caller
    should leave the decision to the worker. Raises ``HeaderError`` for a
    malformed header, zero width or height included, and for nothing else.
    """
    try:
        parser = _PARSERS[fmt]
    except KeyError:
        raise HeaderError(f"not an allowed format: {fmt!r}") from None
    try:
        info = parser(head)
    except HeaderError:
        raise
    except Exception as e:  # pragma: no cover
        # Every read is bounds-checked and the fuzz tests find nothing; this is
        # a last guard so that a bug here is a refused upload, never a 500.
        raise HeaderError(f"malformed {fmt} header") from e
    if info is not None and (info.width < 1 or info.height < 1):
        raise HeaderError(f"{fmt} header declares a zero width or height")
    return info


def check_limits(info: HeaderInfo, limits: ImageLimits) -> str | None:
    """Say which limit ``info`` breaks, or ``None`` if it breaks none.

    The reasons are the ones a failed image reports: ``too_many_pixels``,
    ``too_large`` (a side over ``max_side``) and ``too_many_frames``.
    """
    if info.width * info.height > limits.max_pixels:
        return "too_many_pixels"
    if max(info.width, info.height) > limits.max_side:
        return "too_large"
    if info.frames is not None and info.frames > limits.max_frames:
        return "too_many_frames"
    return None


def _u16be(b: bytes, i: int) -> int:
    return int.from_bytes(b[i : i + 2], "big")


def _u16le(b: bytes, i: int) -> int:
    return int.from_bytes(b[i : i + 2], "little")


def _u24le(b: bytes, i: int) -> int:
    return int.from_bytes(b[i : i + 3], "little")


def _u32be(b: bytes, i: int) -> int:
    return int.from_bytes(b[i : i + 4], "big")


def _u32le(b: bytes, i: int) -> int:
    return int.from_bytes(b[i : i + 4], "little")


def _read_jpeg(head: bytes) -> HeaderInfo | None:
    """Walk the marker segments to the first start-of-frame (SOFn).

    Stray bytes between segments are skipped, as libjpeg and Pillow do, so
    that what the decoder accepts is not refused here.
    """
    if not head.startswith(b"\xff\xd8"[: len(head)]):
        raise HeaderError("not a JPEG file")
    pos = 2
    n = len(head)
    while True:
        # A marker is 0xFF, any number of 0xFF fill bytes, then the marker code.
        while pos < n and head[pos] != 0xFF:
            pos += 1
        while pos < n and head[pos] == 0xFF:
            pos += 1
        if pos >= n:
            return None
        marker = head[pos]
        pos += 1
        if marker == 0x00 or marker in _JPEG_STANDALONE:
            if marker in (0xD8, 0xD9):
                raise HeaderError("JPEG ends before its frame header")
            continue
        if pos + 2 > n:
            return None
        length = _u16be(head, pos)
        if length < 2:
            raise HeaderError("JPEG segment length is too small")
        if marker == 0xDA:
            raise HeaderError("JPEG scan before its frame header")
        if marker in _JPEG_SOF:
            if length < 8:
                raise HeaderError("JPEG frame header is too short")
            if pos + 8 > n:
                return None
            height = _u16be(head, pos + 3)
            width = _u16be(head, pos + 5)
            if head[pos + 7] == 0:
                raise HeaderError("JPEG frame has no components")
            return HeaderInfo("jpeg", width, height, 1)
        pos += length


def _read_png(head: bytes) -> HeaderInfo | None:
    """Read IHDR (which must come first, with a good CRC), then look for acTL."""
    if not head.startswith(_PNG_SIGNATURE[: len(head)]):
        raise HeaderError("not a PNG file")
    if len(head) < 33:
        return None
    if _u32be(head, 8) != 13 or head[12:16] != b"IHDR":
        raise HeaderError("PNG does not start with a valid IHDR chunk")
    if zlib.crc32(head[12:29]) != _u32be(head, 29):
        raise HeaderError("PNG IHDR chunk has a bad CRC")
    width = _u32be(head, 16)
    height = _u32be(head, 20)
    depth, colour, compression, filter_method, interlace = head[24:29]
    if width > _PNG_MAX_SIDE or height > _PNG_MAX_SIDE:
        raise HeaderError("PNG dimensions out of range")
    if depth not in _PNG_DEPTHS.get(colour, ()):
        raise HeaderError("PNG has an invalid colour type or bit depth")
    if compression != 0 or filter_method != 0 or interlace not in (0, 1):
        raise HeaderError("PNG has an invalid compression, filter or interlace method")
    return HeaderInfo("png", width, height, _png_frames(head, 33))


def _png_frames(head: bytes, pos: int) -> int | None:
    """Frames of an APNG from acTL, 1 if IDAT comes first, ``None`` if not in head."""
    n = len(head)
    while pos + 8 <= n:
        length = _u32be(head, pos)
        kind = head[pos + 4 : pos + 8]
        if length > _PNG_MAX_SIDE:
            raise HeaderError("PNG chunk length out of range")
        if kind == b"IDAT":
            return 1
        if kind == b"acTL":
            if length != 8:
                raise HeaderError("PNG acTL chunk has a bad length")
            if pos + 16 > n:
                return None
            frames = _u32be(head, pos + 8)
            if frames == 0:
                raise HeaderError("PNG acTL declares zero frames")
            return frames
        if kind == b"IEND":
            raise HeaderError("PNG has no image data")
        pos += 12 + length
    return None


def _read_gif(head: bytes) -> HeaderInfo | None:
    """Read the logical screen and the first image descriptor, taking the max extents.

    Pillow grows the canvas when a frame reaches beyond the logical screen, so a
    1x1 screen with a huge frame must not pass as 1x1. When the whole file is in
    ``head`` the frames are counted; otherwise ``frames`` is ``None``.
    """
    if len(head) < 13:
        return None
    if head[:6] not in (b"GIF87a", b"GIF89a"):
        raise HeaderError("not a GIF file")
    screen_w = _u16le(head, 6)
    screen_h = _u16le(head, 8)
    flags = head[10]
    pos = 13
    if flags & 0x80:
        pos += 3 << ((flags & 7) + 1)
    width, height = screen_w, screen_h
    frames = 0
    n = len(head)
    while True:
        if pos >= n:
            break
        block = head[pos]
        if block == 0x3B:  # trailer: the whole file was seen
            if frames == 0:
                raise HeaderError("GIF has no image")
            return HeaderInfo("gif", width, height, frames)
        if block == 0x21:  # extension: label, then data sub-blocks
            end = _skip_sub_blocks(head, pos + 2)
            if end is None:
                break
            pos = end
        elif block == 0x2C:  # image descriptor
            if pos + 10 > n:
                break
            if frames == 0:
                left, top = _u16le(head, pos + 1), _u16le(head, pos + 3)
                w, h = _u16le(head, pos + 5), _u16le(head, pos + 7)
                width = max(width, left + w)
                height = max(height, top + h)
                if width < 1 or height < 1:
                    raise HeaderError("GIF declares a zero width or height")
            frames += 1
            local = head[pos + 9]
            pos += 10
            if local & 0x80:
                pos += 3 << ((local & 7) + 1)
            # One byte of LZW minimum code size, then the data sub-blocks.
            end = _skip_sub_blocks(head, pos + 1)
            if end is None:
                break
            pos = end
        else:
            raise HeaderError("GIF has an unknown block")
    # Ran out of bytes before the trailer.
    if frames:
        return HeaderInfo("gif", width, height, None)
    if len(head) >= HEADER_BYTES_MAX and screen_w and screen_h:
        return HeaderInfo("gif", screen_w, screen_h, None)
    return None


def _skip_sub_blocks(head: bytes, pos: int) -> int | None:
    """Position after a chain of GIF data sub-blocks, ``None`` if it runs past ``head``."""
    n = len(head)
    while pos < n:
        size = head[pos]
        pos += 1 + size
        if size == 0:
            return pos
    return None


def _read_webp(head: bytes) -> HeaderInfo | None:
    """Read the first chunk: VP8 (lossy), VP8L (lossless) or VP8X (extended)."""
    if len(head) < 20:
        return None
    if head[:4] != b"RIFF" or head[8:12] != b"WEBP":
        raise HeaderError("not a WebP file")
    kind = head[12:16]
    size = _u32le(head, 16)
    data = head[20:]
    if kind == b"VP8 ":
        if len(data) < 10:
            return None
        if data[0] & 1:
            raise HeaderError("WebP VP8 data does not start with a key frame")
        if data[3:6] != b"\x9d\x01\x2a":
            raise HeaderError("WebP VP8 start code is missing")
        return HeaderInfo("webp", _u16le(data, 6) & 0x3FFF, _u16le(data, 8) & 0x3FFF, 1)
    if kind == b"VP8L":
        if len(data) < 5:
            return None
        if data[0] != 0x2F:
            raise HeaderError("WebP VP8L signature is missing")
        bits = _u32le(data, 1)
        if bits >> 29:
            raise HeaderError("WebP VP8L version is unknown")
        return HeaderInfo("webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, 1)
    if kind == b"VP8X":
        if size < 10:
            raise HeaderError("WebP VP8X chunk is too short")
        if len(data) < 10:
            return None
        width = _u24le(data, 4) + 1
        height = _u24le(data, 7) + 1
        frames: int | None = 1
        if data[0] & 0x02:  # animation flag
            frames = _webp_frames(head)
        return HeaderInfo("webp", width, height, frames)
    raise HeaderError("WebP has an unknown first chunk")


def _webp_frames(head: bytes) -> int | None:
    """Count ANMF chunks when the whole RIFF is in ``head``, else ``None``."""
    end = 8 + _u32le(head, 4)
    if len(head) < end:
        return None
    pos, frames = 12, 0
    while pos + 8 <= end:
        if head[pos : pos + 4] == b"ANMF":
            frames += 1
        size = _u32le(head, pos + 4)
        pos += 8 + size + (size & 1)
    if frames == 0:
        raise HeaderError("animated WebP has no frames")
    return frames


def _read_avif(head: bytes) -> HeaderInfo | None:
    """Find the primary item's ``ispe`` box in meta/iprp/ipco.

    libavif reports the size of the primary item, so that is the one to check;
    if the item associations cannot be read the largest ``ispe`` is taken,
    which errs on the side of refusing.
    """
    animated = False
    meta = None
    for kind, start, end in _boxes(head, 0, None):
        if kind == b"ftyp":
            stop = len(head) if end is None else min(end, len(head))
            brands = [head[start : start + 4]]
            brands += [head[i : i + 4] for i in range(start + 8, stop - 3, 4)]
            animated = b"avis" in brands
        elif kind == b"meta":
            if end is None or end > len(head):
                return None  # the box goes on past what we have
            meta = (start + 4, end)  # a full box: skip version and flags
            break
    if meta is None:
        return None
    primary = None
    iprp = None
    for kind, start, end in _boxes(head, *meta):
        if kind == b"pitm" and end is not None and end - start >= 6:
            version = head[start]
            primary = _u16be(head, start + 4) if version == 0 else _u32be(head, start + 4)
        elif kind == b"iprp":
            iprp = (start, end)
    if iprp is None:
        raise HeaderError("AVIF has no item properties")
    properties: list[tuple[bytes, int, int | None]] = []
    associations: dict[int, list[int]] = {}
    for kind, start, end in _boxes(head, *iprp):
        if kind == b"ipco":
            properties = list(_boxes(head, start, end))
        elif kind == b"ipma" and not associations and end is not None:
            associations = _read_ipma(head, start, end)
    sizes: dict[int, tuple[int, int]] = {}
    for index, (kind, start, end) in enumerate(properties, start=1):
        if kind == b"ispe":
            if end is None or end - start < 12:
                raise HeaderError("AVIF ispe box is too short")
            sizes[index] = (_u32be(head, start + 4), _u32be(head, start + 8))
    if not sizes:
        raise HeaderError("AVIF has no image size")
    chosen = []
    if primary is not None:
        chosen = [sizes[i] for i in associations.get(primary, []) if i in sizes]
    if chosen:
        width, height = chosen[0]
    else:
        width = max(w for w, _ in sizes.values())
        height = max(h for _, h in sizes.values())
    return HeaderInfo("avif", width, height, None if animated else 1)


def _boxes(head: bytes, pos: int, end: int | None) -> Iterator[tuple[bytes, int, int | None]]:
    """Yield (type, payload start, payload end) of the ISO BMFF boxes in head[pos:end].

    ``end`` is ``None`` at the top level, where the file goes on past ``head``:
    there a box may end beyond the bytes we have (its end says so), and a box
    of size 0 ("to the end of the file") has an unknown end, ``None``. Inside a
    box that is wholly in ``head``, a child that overflows its parent is an
    error. Boxes are not descended into: callers do that, a fixed few levels.
    """
    limit = len(head) if end is None else min(end, len(head))
    while pos + 8 <= limit:
        size = _u32be(head, pos)
        kind = head[pos + 4 : pos + 8]
        header = 8
        if size == 1:
            if pos + 16 > limit:
                return
            size = int.from_bytes(head[pos + 8 : pos + 16], "big")
            header = 16
        elif size == 0:
            if end is None:
                yield kind, pos + header, None
                return
            size = end - pos
        if size < header:
            raise HeaderError("ISO BMFF box has a bad size")
        box_end = pos + size
        if end is not None and box_end > end:
            raise HeaderError("ISO BMFF box is larger than its parent")
        yield kind, pos + header, box_end
        pos = box_end


def _read_ipma(head: bytes, start: int, end: int) -> dict[int, list[int]]:
    """Item id -> 1-based property indexes, from an ``ipma`` full box."""
    end = min(end, len(head))
    if start + 8 > end:
        return {}
    version, flags = head[start], _u32be(head, start) & 0xFFFFFF
    count = _u32be(head, start + 4)
    pos = start + 8
    result: dict[int, list[int]] = {}
    for _ in range(min(count, end - pos)):  # each entry takes at least 3 bytes
        id_size = 2 if version < 1 else 4
        if pos + id_size + 1 > end:
            break
        item = int.from_bytes(head[pos : pos + id_size], "big")
        pos += id_size
        n = head[pos]
        pos += 1
        indexes = []
        for _ in range(n):
            if flags & 1:
                if pos + 2 > end:
                    return result
                indexes.append(_u16be(head, pos) & 0x7FFF)
                pos += 2
            else:
                if pos + 1 > end:
                    return result
                indexes.append(head[pos] & 0x7F)
                pos += 1
        result.setdefault(item, indexes)
    return result


_PARSERS = {
    "jpeg": _read_jpeg,
    "png": _read_png,
    "gif": _read_gif,
    "webp": _read_webp,
    "avif": _read_avif,
}
