"""A hostile upload corpus, generated in memory: bombs, broken, lying and foreign files.

Each ``Case`` is the bytes of one upload, the Content-Type a client sends
with it, and the outcomes API.md allows for it:

- ``"400"``, ``"413"``, ``"415"``, ``"422"``: refused at upload with that status;
- ``"ready"``: accepted (202) and crunched into variants;
- ``"failed:<reason>"``: accepted (202), then ``failed`` with that reason.

Nothing here is stored in the repository: every file is built from a few
real images (``tests.images``) and byte-level surgery, deterministically
(seeded), so a failing case can be rebuilt by its name. ``CORPUS`` is the
fixed list; ``mutations`` adds seeded random corruptions of each format.
"""

from __future__ import annotations

import io
import random
import struct
import zipfile
import zlib
from collections.abc import Iterator

import attrs
from PIL import Image

from tests import images

#: The limits the corpus is built around (the API.md defaults).
MAX_BYTES = 10 * 1024 * 1024
MAX_PIXELS = 50_000_000
MAX_SIDE = 20_000
MAX_FRAMES = 1000
#: The crunch memory limit the corpus runs under: every legitimate image of
#: the corpus fits, and the 49-megapixel PNGs whose IDAT inflates a
#: thousandfold do not. (Under the default 512 MiB they decode, in about 4 s.)
BOMB_MEMORY_MB = 128

#: Outcomes no input may ever have: a server error, or a crunch failure that
#: is the code's fault rather than the image's.
NEVER = frozenset({"500", "503", "failed:crashed"})


@attrs.frozen
class Case:
    """One hostile upload and the outcomes it may have."""

    name: str
    data: bytes = attrs.field(repr=lambda d: f"<{len(d)} bytes>")
    content_type: str
    expect: frozenset[str] = attrs.field(converter=frozenset)
    #: Bytes that must never appear in a variant made from it.
    forbidden: tuple[bytes, ...] = ()

    @property
    def accepted(self) -> bool:
        """Whether every allowed outcome is a 202 (the web role lets it through)."""
        return all(not e[0].isdigit() for e in self.expect)


# --- building blocks ------------------------------------------------------------


def png_chunk(kind: bytes, data: bytes = b"") -> bytes:
    """One PNG chunk with its length and CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_file(ihdr: bytes, *chunks: bytes) -> bytes:
    """A PNG from an IHDR payload and whole chunks; IEND is added."""
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + b"".join(chunks) + png_chunk(b"IEND")


def ihdr(width: int, height: int, depth: int = 8, colour: int = 2) -> bytes:
    return struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)


def zeros_deflated(n: int, level: int = 9) -> bytes:
    """``n`` zero bytes, deflated (about a thousandth of ``n``)."""
    z = zlib.compressobj(level)
    block = bytes(1 << 20)
    out = [z.compress(block) for _ in range(n >> 20)]
    out.append(z.compress(bytes(n & ((1 << 20) - 1))))
    out.append(z.flush())
    return b"".join(out)


def zip_archive(name: str = "payload.txt", text: bytes = b"profiled hostile payload") -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr(name, text)
    return out.getvalue()


def jar_archive() -> bytes:
    """A minimal JAR (a ZIP with a manifest and a class file name): the tail of a GIFAR."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\r\nMain-Class: Evil\r\n")
        z.writestr("Evil.class", b"\xca\xfe\xba\xbe" + b"\x00" * 32)
    return out.getvalue()


def jpeg_with_segment(marker: int, payload: bytes, base: bytes | None = None) -> bytes:
    """A small real JPEG with one more APPn (or other) segment right after SOI."""
    base = base or images.jpeg((32, 32))
    segment = bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload
    return base[:2] + segment + base[2:]


def exif_tiff(
    entries: list[tuple[int, int, int, bytes]], *, next_ifd: int = 0, count=None
) -> bytes:
    """A little-endian TIFF header and one IFD of (tag, type, count, 4-byte value) entries.

    ``count`` overrides the declared number of entries (a lie, for absurd counts).
    """
    n = len(entries) if count is None else count
    body = struct.pack("<H", n & 0xFFFF)
    for tag, kind, cnt, value in entries:
        body += struct.pack("<HHI", tag, kind, cnt) + value.ljust(4, b"\x00")[:4]
    body += struct.pack("<I", next_ifd)
    return b"II*\x00" + struct.pack("<I", 8) + body


def exif_jpeg(tiff: bytes) -> bytes:
    """A 40x30 JPEG carrying ``tiff`` as its EXIF (APP1)."""
    return jpeg_with_segment(0xE1, b"Exif\x00\x00" + tiff, images.jpeg((40, 30)))


def orientation_jpeg(value: int) -> bytes:
    return exif_jpeg(exif_tiff([(0x0112, 3, 1, struct.pack("<H", value))]))


def icc_jpeg_segments(icc: bytes, base: bytes | None = None) -> bytes:
    """A JPEG carrying ``icc`` in as many APP2 ICC_PROFILE segments as it needs."""
    base = base or images.jpeg((48, 48))
    step = 65519 - 14
    parts = [icc[i : i + step] for i in range(0, len(icc), step)] or [b""]
    segments = b""
    for i, part in enumerate(parts, start=1):
        payload = b"ICC_PROFILE\x00" + bytes([i, len(parts)]) + part
        segments += b"\xff\xe2" + struct.pack(">H", len(payload) + 2) + payload
    return base[:2] + segments + base[2:]


def gif_frames(count: int, size: tuple[int, int] = (1, 1)) -> bytes:
    """A GIF of ``count`` 1x1 frames: tens of bytes per frame, each a full image."""
    w, h = size
    head = b"GIF89a" + struct.pack("<HHBBB", w, h, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    frame = (
        b"\x21\xf9\x04\x00\x00\x00\x00\x00"  # graphic control: no delay
        + b"\x2c"
        + struct.pack("<HHHHB", 0, 0, 1, 1, 0)
        + b"\x02\x02\x44\x01\x00"
    )
    return head + frame * count + b"\x3b"


def gif_frame_at(left: int, top: int, width: int = 1, height: int = 1) -> bytes:
    """A 1x1 logical screen whose only frame sits at (left, top)."""
    return (
        b"GIF89a"
        + struct.pack("<HHBBB", 1, 1, 0x80, 0, 0)
        + b"\x00\x00\x00\xff\xff\xff"
        + b"\x2c"
        + struct.pack("<HHHHB", left, top, width, height, 0)
        + b"\x02\x02\x44\x01\x00"
        + b"\x3b"
    )


def gif_second_frame_huge() -> bytes:
    """A 16x16 GIF whose second frame reaches out to 60000x60000."""
    base = gif_frames(1, (16, 16))[:-1]
    huge = b"\x2c" + struct.pack("<HHHHB", 0, 0, 60000, 60000, 0) + b"\x02\x02\x44\x01\x00"
    return base + huge + b"\x3b"


def apng_frames(declared: int) -> bytes:
    """A 16x16 APNG whose acTL declares ``declared`` frames."""
    idat = png_chunk(b"IDAT", zlib.compress(b"\x00" + b"\x00" * 48 * 16))
    return png_file(ihdr(16, 16), png_chunk(b"acTL", struct.pack(">II", declared, 0)), idat)


def png_idat_expansion(width: int, height: int, depth: int = 8, colour: int = 6) -> bytes:
    """A valid PNG of zero pixels whose IDAT inflates about a thousandfold."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
    row = 1 + width * channels * depth // 8
    return png_file(
        ihdr(width, height, depth, colour), png_chunk(b"IDAT", zeros_deflated(row * height))
    )


def png_idat_overflow() -> bytes:
    """A 16x16 PNG whose IDAT inflates to 64 MiB: far more than the image needs."""
    return png_file(ihdr(16, 16), png_chunk(b"IDAT", zeros_deflated(64 << 20)))


def png_many_chunks(count: int = 20000) -> bytes:
    """A 16x16 PNG with thousands of ancillary chunks before its IDAT."""
    junk = png_chunk(b"tEXt", b"k\x00v") * count
    good = _plain_png((16, 16))
    return good[:33] + junk + good[33:]


def _plain_png(size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (10, 20, 30)).save(out, "PNG")
    return out.getvalue()


def png_text_bomb() -> bytes:
    """A PNG with a zTXt chunk that inflates to 64 MiB (Pillow caps text chunks)."""
    good = _plain_png((16, 16))
    ztxt = png_chunk(b"zTXt", b"Comment\x00\x00" + zeros_deflated(64 << 20))
    return good[:33] + ztxt + good[33:]


def png_iccp_bomb() -> bytes:
    """A PNG whose iCCP profile inflates to 64 MiB."""
    good = _plain_png((16, 16))
    iccp = png_chunk(b"iCCP", b"icc\x00\x00" + zeros_deflated(64 << 20))
    return good[:33] + iccp + good[33:]


def webp_animated_frames(count: int) -> bytes:
    """An animated WebP (VP8X + ANIM) with ``count`` tiny ANMF chunks of nothing."""
    vp8x = b"VP8X" + struct.pack("<I", 10) + bytes([0x02, 0, 0, 0]) + (15).to_bytes(3, "little") * 2
    anim = b"ANIM" + struct.pack("<I", 6) + b"\x00" * 6
    frame_data = bytes(16)  # x, y, w-1, h-1, duration, flags; no image in it
    anmf = b"ANMF" + struct.pack("<I", len(frame_data)) + frame_data
    body = b"WEBP" + vp8x + anim + anmf * count
    return b"RIFF" + struct.pack("<I", len(body)) + body


def avif_declared(width: int, height: int) -> bytes:
    """A real AVIF whose every ``ispe`` box is rewritten to declare ``width`` x ``height``."""
    data = bytearray(images.avif((16, 16)))
    pos = 0
    while (pos := data.find(b"ispe", pos)) != -1:
        struct.pack_into(">II", data, pos + 8, width, height)
        pos += 4
    return bytes(data)


def declared_jpeg_progressive(width: int, height: int) -> bytes:
    data = bytearray(images.jpeg((16, 16), progressive=True))
    pos = data.index(b"\xff\xc2")
    struct.pack_into(">HH", data, pos + 5, height, width)
    return bytes(data)


def png_with_html() -> bytes:
    """A PNG that is also an HTML page: a script in a tEXt chunk and after IEND."""
    script = b"<html><script>alert('profiled-polyglot')</script></html>"
    good = _plain_png((24, 24))
    return good[:33] + png_chunk(b"tEXt", b"Comment\x00" + script) + good[33:] + script


# --- the corpus ---------------------------------------------------------------------


def _bombs() -> Iterator[Case]:
    r422 = {"422"}
    yield Case("png-declared-30000x30000", images.declared_png(), "image/png", r422)
    yield Case("png-declared-max-u31", images.declared_png(2**31 - 1, 2**31 - 1), "image/png", r422)
    yield Case("png-one-pixel-high-wide", images.declared_png(20_001, 1), "image/png", r422)
    # Within the pixel limit: only the crunch memory limit stops these (BOMB_MEMORY_MB).
    yield Case(
        "png-idat-expansion-7000x7000-rgba16",
        png_idat_expansion(7000, 7000, 16, 6),
        "image/png",
        {"failed:out_of_memory"},
    )
    yield Case(
        "png-idat-expansion-7000x7000-rgba",
        png_idat_expansion(7000, 7000, 8, 6),
        "image/png",
        {"failed:out_of_memory"},
    )
    yield Case(
        "png-idat-overflow-64MiB", png_idat_overflow(), "image/png", {"ready", "failed:corrupt"}
    )
    yield Case("png-ztxt-64MiB", png_text_bomb(), "image/png", {"ready", "failed:corrupt"})
    yield Case("png-iccp-64MiB", png_iccp_bomb(), "image/png", {"ready", "failed:corrupt"})
    yield Case("png-20000-text-chunks", png_many_chunks(), "image/png", {"ready", "failed:corrupt"})
    yield Case("apng-2^31-frames", apng_frames(2**31 - 1), "image/png", r422)
    yield Case("apng-1001-frames", apng_frames(MAX_FRAMES + 1), "image/png", r422)
    yield Case("jpeg-declared-30000x30000", images.declared_jpeg(), "image/jpeg", r422)
    yield Case("jpeg-declared-65535x65535", images.declared_jpeg(65535, 65535), "image/jpeg", r422)
    yield Case(
        "jpeg-progressive-declared-20000x20000",
        declared_jpeg_progressive(20_000, 20_000),
        "image/jpeg",
        r422,
    )
    yield Case("gif-declared-30000x30000", images.declared_gif(), "image/gif", r422)
    yield Case("gif-1x1-screen-huge-frame", images.declared_gif_frame(), "image/gif", r422)
    yield Case("gif-frame-at-65535-65535", gif_frame_at(65535, 65535), "image/gif", r422)
    yield Case("gif-frame-at-20000-0", gif_frame_at(20_000, 0), "image/gif", r422)
    yield Case(
        "gif-second-frame-huge", gif_second_frame_huge(), "image/gif", {"ready", "failed:corrupt"}
    )
    yield Case("gif-1001-frames", gif_frames(MAX_FRAMES + 1), "image/gif", r422)
    # Past the 256 KiB the web role looks at: only the worker can count them.
    yield Case(
        "gif-12000-frames-past-the-head",
        gif_frames(12_000),
        "image/gif",
        {"failed:too_many_frames"},
    )
    yield Case("gif-1000-frames", gif_frames(MAX_FRAMES), "image/gif", {"ready"})
    yield Case("webp-declared-16384x16384", images.declared_webp(16384, 16384), "image/webp", r422)
    yield Case("webp-vp8x-max-canvas", images.declared_webp(2**24, 2**24), "image/webp", r422)
    yield Case("webp-1001-frames", webp_animated_frames(MAX_FRAMES + 1), "image/webp", r422)
    yield Case("avif-declared-30000x30000", avif_declared(30000, 30000), "image/avif", r422)
    yield Case("avif-declared-2^32-1", avif_declared(2**32 - 1, 2**32 - 1), "image/avif", r422)


def _good() -> dict[str, tuple[bytes, str]]:
    return {
        "jpeg": (images.camera_jpeg((640, 480)), "image/jpeg"),
        "png": (images.rgba_png((120, 90)), "image/png"),
        "gif": (images.animated_gif(), "image/gif"),
        "webp": (images.webp_lossy((120, 90)), "image/webp"),
        "avif": (images.avif((120, 90)), "image/avif"),
    }


def _truncated_and_corrupt() -> Iterator[Case]:
    for fmt, (data, ctype) in _good().items():
        # Cut inside the header: the web role sees it is truncated (or the worker does).
        yield Case(f"{fmt}-first-16-bytes", data[:16], ctype, {"415"})
        # A PNG or GIF cut after its last pixel still decodes; others are corrupt.
        cut_ok = {"jpeg": {"failed:corrupt"}, "webp": {"failed:corrupt"}}.get(
            fmt, {"415", "failed:corrupt", "ready"}
        )
        for keep in (0.3, 0.6, 0.95):
            yield Case(
                f"{fmt}-truncated-{int(keep * 100)}pct",
                data[: int(len(data) * keep)],
                ctype,
                cut_ok,
            )
        # Garbage after a valid header: decodes to noise or fails, never crashes.
        cut = min(len(data) // 3, 400)
        noise = random.Random(fmt).randbytes(len(data) - cut)
        yield Case(
            f"{fmt}-garbage-after-header",
            data[:cut] + noise,
            ctype,
            {"415", "422", "ready", "failed:corrupt"},
        )
    yield Case(
        "png-bad-ihdr-crc",
        _plain_png((8, 8))[:29] + b"\0\0\0\0" + _plain_png((8, 8))[33:],
        "image/png",
        {"415"},
    )
    yield Case(
        "png-idat-bad-crc",
        _flip_idat_crc(_plain_png((8, 8))),
        "image/png",
        {"ready", "failed:corrupt"},
    )
    yield Case("png-no-idat", png_file(ihdr(8, 8)), "image/png", {"415"})
    yield Case(
        "png-bad-zlib",
        png_file(ihdr(8, 8), png_chunk(b"IDAT", b"\x78\x9c" + b"\xff" * 40)),
        "image/png",
        {"failed:corrupt"},
    )
    yield Case("jpeg-soi-eoi", b"\xff\xd8\xff\xd9", "image/jpeg", {"415"})
    yield Case(
        "jpeg-sos-before-sof", b"\xff\xd8\xff\xda\x00\x08" + bytes(40), "image/jpeg", {"415"}
    )
    yield Case("jpeg-zero-components", _jpeg_zero_components(), "image/jpeg", {"415"})
    yield Case("gif-no-image", b"GIF89a\x01\x00\x01\x00\x00\x00\x00\x3b", "image/gif", {"415"})
    yield Case(
        "gif-unknown-block",
        b"GIF89a\x01\x00\x01\x00\x00\x00\x00\x99" + bytes(40),
        "image/gif",
        {"415"},
    )
    yield Case(
        "webp-unknown-chunk", b"RIFF\x20\x00\x00\x00WEBPABCD" + bytes(24), "image/webp", {"415"}
    )
    yield Case(
        "webp-riff-size-lies", _webp_riff_size(2**32 - 1), "image/webp", {"ready", "failed:corrupt"}
    )


def _flip_idat_crc(data: bytes) -> bytes:
    pos = data.index(b"IDAT")
    length = struct.unpack(">I", data[pos - 4 : pos])[0]
    crc = pos + 4 + length
    return data[:crc] + bytes(b ^ 0xFF for b in data[crc : crc + 4]) + data[crc + 4 :]


def _jpeg_zero_components() -> bytes:
    data = bytearray(images.jpeg((16, 16)))
    pos = data.index(b"\xff\xc0")
    data[pos + 9] = 0
    return bytes(data)


def _webp_riff_size(size: int) -> bytes:
    data = bytearray(images.webp_lossy((16, 16)))
    struct.pack_into("<I", data, 4, size)
    return bytes(data)


def _lies_and_foreign() -> Iterator[Case]:
    good = _good()
    r415 = {"415"}
    yield Case("png-declared-jpeg", good["png"][0], "image/jpeg", r415)
    yield Case("jpeg-declared-png", good["jpeg"][0], "image/png", r415)
    yield Case("gif-declared-webp", good["gif"][0], "image/webp", r415)
    yield Case("webp-declared-gif", good["webp"][0], "image/gif", r415)
    yield Case("avif-declared-jpeg", good["avif"][0], "image/jpeg", r415)
    yield Case("png-declared-svg", good["png"][0], "image/svg+xml", r415)
    yield Case("png-declared-html", good["png"][0], "text/html", r415)
    yield Case("jpeg-declared-garbage-type", good["jpeg"][0], "image/jpeg<script>", r415)
    yield Case("svg", images.svg(), "image/svg+xml", r415)
    yield Case("svg-declared-png", images.svg(), "image/png", r415)
    yield Case("svg-declared-octet-stream", images.svg(), "application/octet-stream", r415)
    yield Case("html-declared-jpeg", images.html(), "image/jpeg", r415)
    yield Case(
        "xml-xxe-declared-octet-stream",
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>',
        "application/octet-stream",
        r415,
    )
    laughs = b"".join(b'<!ENTITY %c "%s">' % (98 + i, (b"&%c;" % (97 + i)) * 10) for i in range(8))
    yield Case(
        "xml-billion-laughs",
        b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "lol">' + laughs + b"]><l>&i;</l>",
        "image/svg+xml",
        r415,
    )
    yield Case("bmp", images.bmp(), "image/bmp", r415)
    yield Case("bmp-declared-octet-stream", images.bmp(), "application/octet-stream", r415)
    yield Case("tiff-declared-jpeg", images.tiff(), "image/jpeg", r415)
    yield Case("zip", zip_archive(), "application/zip", r415)
    yield Case("zip-then-jpeg", zip_archive() + good["jpeg"][0], "image/jpeg", r415)
    yield Case(
        "pdf-declared-octet-stream",
        b"%PDF-1.4\n1 0 obj<<>>endobj\n%%EOF\n",
        "application/octet-stream",
        r415,
    )
    yield Case(
        "jpeg-magic-then-html",
        b"\xff\xd8\xff" + images.html(),
        "image/jpeg",
        {"415", "failed:corrupt"},
    )
    yield Case(
        "heic-brand",
        b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64),
        "image/heic",
        r415,
    )
    yield Case("empty", b"", "image/jpeg", {"400"})
    yield Case("one-byte", b"\xff", "image/jpeg", {"415"})
    yield Case("one-byte-octet-stream", b"G", "application/octet-stream", {"415"})
    yield Case("nul-bytes", bytes(4096), "application/octet-stream", r415)


def _polyglots() -> Iterator[Case]:
    jpeg_data = images.jpeg((64, 64))
    yield Case(
        "polyglot-jpeg+zip",
        jpeg_data + zip_archive(),
        "image/jpeg",
        {"ready"},
        (b"PK\x03\x04", b"profiled hostile payload"),
    )
    yield Case(
        "polyglot-png+html",
        png_with_html(),
        "image/png",
        {"ready"},
        (b"<script", b"profiled-polyglot"),
    )
    yield Case(
        "polyglot-gifar",
        images.gif((32, 32)) + jar_archive(),
        "image/gif",
        {"ready"},
        (b"PK\x03\x04", b"META-INF", b"\xca\xfe\xba\xbe"),
    )
    yield Case(
        "polyglot-jpeg-comment-html",
        jpeg_with_segment(0xFE, b"<html><script>alert('profiled-polyglot')</script>"),
        "image/jpeg",
        {"ready"},
        (b"<script", b"profiled-polyglot"),
    )
    yield Case(
        "polyglot-webp+zip",
        images.webp_lossy((32, 32)) + zip_archive(),
        "image/webp",
        {"ready", "failed:corrupt"},
        (b"PK\x03\x04",),
    )


def _exif_and_icc() -> Iterator[Case]:
    for value in (0, 9, 65535):
        yield Case(f"exif-orientation-{value}", orientation_jpeg(value), "image/jpeg", {"ready"})
    yield Case(
        "exif-ifd-count-65535",
        exif_jpeg(exif_tiff([(0x0112, 3, 1, b"\x06\x00")], count=0xFFFF)),
        "image/jpeg",
        {"ready"},
    )
    yield Case(
        "exif-entry-count-2^32",
        exif_jpeg(exif_tiff([(0x010F, 2, 0xFFFFFFFF, struct.pack("<I", 8))])),
        "image/jpeg",
        {"ready"},
    )
    yield Case(
        "exif-ifd-loop",
        exif_jpeg(exif_tiff([(0x0112, 3, 1, b"\x06\x00")], next_ifd=8)),
        "image/jpeg",
        {"ready"},
    )
    yield Case(
        "exif-subifd-loop",
        exif_jpeg(exif_tiff([(0x8769, 4, 1, struct.pack("<I", 8)), (0x0112, 3, 1, b"\x03\x00")])),
        "image/jpeg",
        {"ready"},
    )
    yield Case(
        "exif-offset-past-end",
        exif_jpeg(b"II*\x00" + struct.pack("<I", 0x7FFFFFFF)),
        "image/jpeg",
        {"ready"},
    )
    yield Case("exif-not-tiff", exif_jpeg(b"garbage!" * 8), "image/jpeg", {"ready"})
    yield Case("exif-empty", jpeg_with_segment(0xE1, b"Exif\x00\x00"), "image/jpeg", {"ready"})
    rng = random.Random(7)
    yield Case("icc-random-bytes", images.icc_jpeg(rng.randbytes(3000)), "image/jpeg", {"ready"})
    yield Case("icc-truncated", images.icc_jpeg(images.srgb_icc()[:200]), "image/jpeg", {"ready"})
    icc = bytearray(images.srgb_icc())
    struct.pack_into(">I", icc, 128, 0xFFFFFFFF)  # tag count
    yield Case("icc-tag-count-2^32", images.icc_jpeg(bytes(icc)), "image/jpeg", {"ready"})
    icc = bytearray(images.srgb_icc())
    struct.pack_into(">I", icc, 0, 0xFFFFFFF0)  # declared profile size
    yield Case("icc-declared-size-4GiB", images.icc_jpeg(bytes(icc)), "image/jpeg", {"ready"})
    huge = images.srgb_icc() + rng.randbytes(2 * 1024 * 1024)
    yield Case("icc-2MiB-in-jpeg", icc_jpeg_segments(huge), "image/jpeg", {"ready"})
    yield Case(
        "icc-png-random",
        _png_with_iccp(rng.randbytes(2000)),
        "image/png",
        {"ready"},
    )
    yield Case(
        "icc-cmyk-profile-on-rgb",
        images.icc_jpeg(images.cmyk_icc(3)),
        "image/jpeg",
        {"ready"},
    )


def _png_with_iccp(icc: bytes) -> bytes:
    good = _plain_png((16, 16))
    return good[:33] + png_chunk(b"iCCP", b"icc\x00\x00" + zlib.compress(icc)) + good[33:]


def _sizes() -> Iterator[Case]:
    yield Case("over-the-limit-by-one", _padded_jpeg(MAX_BYTES + 1), "image/jpeg", {"413"})
    yield Case("at-the-limit", _padded_jpeg(MAX_BYTES), "image/jpeg", {"ready"})


def _padded_jpeg(size: int) -> bytes:
    """A real JPEG padded with trailing bytes to exactly ``size`` bytes."""
    data = images.jpeg((32, 32))
    return data + bytes(size - len(data))


def corpus() -> list[Case]:
    """Every fixed case, in a stable order."""
    cases = [
        *_bombs(),
        *_truncated_and_corrupt(),
        *_lies_and_foreign(),
        *_polyglots(),
        *_exif_and_icc(),
        *_sizes(),
    ]
    names = [c.name for c in cases]
    assert len(set(names)) == len(names), "case names must be unique"
    return cases


def mutations(per_format: int, seed: int = 0) -> Iterator[Case]:
    """Seeded random corruptions of a good file of each format: flips, cuts, splices."""
    rng = random.Random(seed)
    allowed = {"400", "413", "415", "422", "ready"} | {
        f"failed:{r}"
        for r in (
            "corrupt",
            "unsupported",
            "too_many_pixels",
            "too_large",
            "too_many_frames",
            "out_of_memory",
            "timeout",
        )
    }
    for fmt, (data, ctype) in _good().items():
        for i in range(per_format):
            buf = bytearray(data)
            kind = rng.choice(("flip", "flip-head", "cut", "splice", "repeat"))
            if kind == "flip":
                for _ in range(rng.randint(1, 20)):
                    buf[rng.randrange(len(buf))] = rng.randrange(256)
            elif kind == "flip-head":
                for _ in range(rng.randint(1, 4)):
                    buf[rng.randrange(min(len(buf), 200))] = rng.randrange(256)
            elif kind == "cut":
                start = rng.randrange(len(buf))
                del buf[start : start + rng.randint(1, 500)]
            elif kind == "splice":
                at = rng.randrange(len(buf))
                buf[at:at] = rng.randbytes(rng.randint(1, 300))
            else:
                at = rng.randrange(len(buf))
                buf[at:at] = buf[at : at + 64] * rng.randint(2, 50)
            yield Case(f"mutant-{fmt}-{kind}-{i}", bytes(buf), ctype, allowed)
