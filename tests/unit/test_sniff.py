"""sniff(), read_header() and check_limits(): the web role's look at untrusted first bytes."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from profiled.crunch.sniff import (
    FORMATS,
    HEADER_BYTES_MAX,
    SNIFF_BYTES,
    HeaderError,
    HeaderInfo,
    ImageLimits,
    check_limits,
    read_header,
    sniff,
)
from tests import images

VALID: dict[str, tuple[bytes, str, int, int, int | None]] = {
    # name: (bytes, format, width, height, frames)
    "jpeg": (images.jpeg((64, 48)), "jpeg", 64, 48, 1),
    "jpeg_progressive": (images.jpeg((30, 20), progressive=True), "jpeg", 30, 20, 1),
    "jpeg_gray": (images.gray_jpeg((17, 9)), "jpeg", 17, 9, 1),
    "jpeg_metadata": (images.metadata_jpeg((64, 48)), "jpeg", 64, 48, 1),
    "jpeg_cmyk": (images.cmyk_jpeg(), "jpeg", 80, 40, 1),
    "png": (images.rgba_png((33, 44)), "png", 33, 44, 1),
    "png_palette": (images.palette_png((10, 12)), "png", 10, 12, 1),
    "png16": (images.png16((20, 10)), "png", 20, 10, 1),
    "apng": (images.apng((48, 40)), "png", 48, 40, 2),
    "gif": (images.gif((48, 40)), "gif", 48, 40, 1),
    "gif_animated": (images.animated_gif((48, 40)), "gif", 48, 40, 3),
    "webp_lossy": (images.webp_lossy((64, 48)), "webp", 64, 48, 1),
    "webp_lossless": (images.webp_lossless((63, 47)), "webp", 63, 47, 1),
    "webp_alpha": (images.webp_alpha((64, 48)), "webp", 64, 48, 1),
    "webp_animated": (images.webp_animated((48, 40)), "webp", 48, 40, 2),
    "avif": (images.avif((64, 48)), "avif", 64, 48, 1),
}

FOREIGN = {
    "svg": images.svg(),
    "html": images.html(),
    "zip": images.zip_payload(),
    "bmp": images.bmp(),
    "tiff": images.tiff(),
    "random": images.random_bytes(),
    "empty": b"",
    "heic": b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 16,
}


@pytest.mark.parametrize("name", sorted(VALID))
def test_sniff_names_each_allowed_format(name: str) -> None:
    """The first SNIFF_BYTES of every allowed format name it."""
    data, fmt, *_ = VALID[name]
    assert sniff(data[:SNIFF_BYTES]) == fmt
    assert fmt in FORMATS


@pytest.mark.parametrize("name", sorted(FOREIGN))
def test_sniff_refuses_other_formats(name: str) -> None:
    """SVG, HTML, ZIP, BMP, TIFF, HEIC, random bytes and nothing are not images we take."""
    assert sniff(FOREIGN[name][:SNIFF_BYTES]) is None


def test_sniff_needs_the_whole_signature() -> None:
    """A prefix shorter than the signature is not enough to name a format."""
    assert sniff(b"\x89PNG") is None
    assert sniff(b"\xff\xd8") is None
    assert sniff(b"GIF8") is None


@pytest.mark.parametrize("name", sorted(VALID))
def test_read_header_gives_size_and_frames(name: str) -> None:
    """The header of every allowed format gives its dimensions (and frames when known)."""
    data, fmt, width, height, frames = VALID[name]
    info = read_header(data, fmt)
    assert info == HeaderInfo(fmt, width, height, frames)


@pytest.mark.parametrize("name", sorted(VALID))
def test_read_header_asks_for_more_bytes(name: str) -> None:
    """A head cut before the dimensions answers None, never a wrong size."""
    data, fmt, width, height, _ = VALID[name]
    for n in range(0, 30):
        info = read_header(data[:n], fmt)
        assert info is None or (info.width, info.height) == (width, height)


def test_read_header_skips_app_segments() -> None:
    """A JPEG's frame header is found after large APPn segments (EXIF, ICC, XMP)."""
    data = images.metadata_jpeg((100, 50))
    assert data.index(b"\xff\xc0") > 1000
    assert read_header(data, "jpeg") == HeaderInfo("jpeg", 100, 50, 1)


def test_read_header_gif_takes_the_frame_extent() -> None:
    """A GIF whose first frame is larger than its logical screen reports the frame's extent."""
    info = read_header(images.declared_gif_frame(30000, 20000), "gif")
    assert info is not None and (info.width, info.height) == (30000, 20000)


def test_read_header_gif_frames_unknown_when_cut() -> None:
    """A GIF seen only in part reports its size but an unknown frame count."""
    data = images.animated_gif((48, 40))
    info = read_header(data[:-5], "gif")
    assert info == HeaderInfo("gif", 48, 40, None)


@pytest.mark.parametrize(
    ("maker", "fmt"),
    [
        (images.declared_png, "png"),
        (images.declared_jpeg, "jpeg"),
        (images.declared_gif, "gif"),
        (images.declared_webp, "webp"),
    ],
)
def test_declared_bombs_are_seen_and_refused(maker, fmt: str) -> None:  # type: ignore[no-untyped-def]
    """A tiny file declaring 30000x30000 is read as such and breaks the pixel limit."""
    info = read_header(maker(30000, 30000), fmt)
    assert info is not None and (info.width, info.height) == (30000, 30000)
    assert check_limits(info, ImageLimits()) == "too_many_pixels"


def test_png_must_start_with_ihdr() -> None:
    """A PNG whose first chunk is not IHDR is malformed."""
    data = images.rgba_png()
    swapped = data[:12] + b"IHDX" + data[16:]
    with pytest.raises(HeaderError):
        read_header(swapped, "png")


def test_png_ihdr_crc_is_checked() -> None:
    """A PNG whose IHDR CRC does not match is malformed."""
    data = bytearray(images.rgba_png())
    data[29] ^= 0xFF
    with pytest.raises(HeaderError, match="CRC"):
        read_header(bytes(data), "png")


@pytest.mark.parametrize(
    ("data", "fmt"),
    [
        (images.declared_png(0, 10), "png"),
        (images.declared_jpeg(10, 0), "jpeg"),
        (images.declared_gif(0, 0), "gif"),
    ],
)
def test_zero_dimensions_are_malformed(data: bytes, fmt: str) -> None:
    """A header declaring a zero width or height raises HeaderError."""
    with pytest.raises(HeaderError):
        read_header(data, fmt)


def test_jpeg_scan_before_frame_is_malformed() -> None:
    """A JPEG reaching its scan (SOS) before any frame header is malformed."""
    with pytest.raises(HeaderError):
        read_header(b"\xff\xd8\xff\xda\x00\x08" + b"\x00" * 10, "jpeg")


def test_jpeg_end_before_frame_is_malformed() -> None:
    """A JPEG ending (EOI) before any frame header is malformed."""
    with pytest.raises(HeaderError):
        read_header(b"\xff\xd8\xff\xd9", "jpeg")


def test_unknown_format_name_is_an_error() -> None:
    """Asking for a format outside FORMATS raises HeaderError, not KeyError."""
    with pytest.raises(HeaderError):
        read_header(b"BM" + b"\x00" * 40, "bmp")


def test_avif_without_meta_in_head_needs_more() -> None:
    """An AVIF cut before its meta box is complete answers None."""
    data = images.avif()
    assert read_header(data[:40], "avif") is None


def test_avif_primary_item_size_is_used() -> None:
    """The AVIF size comes from the primary item's ispe, whatever else is in ipco."""
    # An AVIF with alpha has a second item (the alpha plane) with its own ispe.
    assert read_header(images.avif_alpha((40, 30)), "avif") == HeaderInfo("avif", 40, 30, 1)


def test_webp_vp8x_canvas_size() -> None:
    """An extended WebP reports its VP8X canvas size, up to 2^24 a side."""
    info = read_header(images.declared_webp(16_000_000, 2), "webp")
    assert info == HeaderInfo("webp", 16_000_000, 2, 1)


@pytest.mark.parametrize(
    ("info", "reason"),
    [
        (HeaderInfo("png", 7071, 7071, 1), None),
        (HeaderInfo("png", 7072, 7072, 1), "too_many_pixels"),
        (HeaderInfo("png", 20_000, 100, 1), None),
        (HeaderInfo("png", 20_001, 100, 1), "too_large"),
        (HeaderInfo("gif", 10, 10, 1000), None),
        (HeaderInfo("gif", 10, 10, 1001), "too_many_frames"),
        (HeaderInfo("gif", 10, 10, None), None),
    ],
)
def test_check_limits(info: HeaderInfo, reason: str | None) -> None:
    """Each limit is inclusive and names its own reason."""
    assert check_limits(info, ImageLimits()) == reason


def test_check_limits_custom() -> None:
    """Limits come from the ImageLimits given."""
    limits = ImageLimits(max_pixels=100, max_side=20, max_frames=2)
    assert check_limits(HeaderInfo("png", 10, 10, 2), limits) is None
    assert check_limits(HeaderInfo("png", 10, 11, 1), limits) == "too_many_pixels"
    assert check_limits(HeaderInfo("png", 21, 1, 1), limits) == "too_large"
    assert check_limits(HeaderInfo("png", 1, 1, 3), limits) == "too_many_frames"


# --- properties: nothing but HeaderError, and nothing absurd ---------------

HEADS = [data[:4096] for data, *_ in VALID.values()] + [
    images.declared_png()[:200],
    images.declared_gif_frame(),
    images.declared_webp()[:64],
]


def _check_sane(info: HeaderInfo | None, fmt: str) -> None:
    if info is None:
        return
    assert info.format == fmt
    assert 1 <= info.width <= 2**32 + 2**16 and 1 <= info.height <= 2**32 + 2**16
    assert info.frames is None or info.frames >= 1
    check_limits(info, ImageLimits())


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_never_raise_anything_else(data: bytes) -> None:
    """On any bytes, sniff/read_header/check_limits raise nothing but HeaderError."""
    fmt = sniff(data)
    for name in [fmt] if fmt else list(FORMATS):
        try:
            _check_sane(read_header(data, name), name)
        except HeaderError as e:
            assert str(e)


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(HEADS),
    st.lists(st.tuples(st.integers(0, 4095), st.integers(0, 255)), max_size=8),
    st.integers(0, 4096),
)
def test_mutated_headers_never_raise_anything_else(
    head: bytes, edits: list[tuple[int, int]], cut: int
) -> None:
    """Valid heads with bytes flipped and cut anywhere give a sane answer or HeaderError."""
    data = bytearray(head)
    for pos, value in edits:
        if pos < len(data):
            data[pos] = value
    mutated = bytes(data[:cut])
    fmt = sniff(head)
    assert fmt is not None
    sniff(mutated)
    try:
        _check_sane(read_header(mutated, fmt), fmt)
    except HeaderError as e:
        assert str(e)


@settings(max_examples=200)
@given(st.integers(0, 2**16 - 1), st.integers(0, 2**16 - 1), st.binary(max_size=64))
def test_gif_sizes_round_trip(width: int, height: int, tail: bytes) -> None:
    """Any GIF logical screen size is read back exactly, or refused when zero."""
    data = b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0) + b"\x2c"
    data += struct.pack("<HHHHB", 0, 0, width, height, 0) + tail
    try:
        info = read_header(data, "gif")
    except HeaderError:
        assert width == 0 or height == 0 or tail
        return
    assert info is not None and (info.width, info.height) == (width, height)


def test_huge_head_is_walked_in_bounded_time() -> None:
    """A head of HEADER_BYTES_MAX of filler after SOI is walked quickly and needs more."""
    head = b"\xff\xd8" + (b"\xff\xe1\xff\xff" + b"\x00" * 65533) * 4
    assert read_header(head[:HEADER_BYTES_MAX], "jpeg") is None
