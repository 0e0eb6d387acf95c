"""Test images, made in memory: each public function returns the bytes of one file.

(``quadrants`` and ``flat`` return Pillow images to build on, ``distance``
compares colours.) Unit tests of the crunch package and end-to-end tests of
the roles both use these, so they are plain functions with no test framework
in them, and deterministic: the same call gives the same bytes. Images
that orientation or colour tests sample are made of flat quadrants or patches,
which survive JPEG compression and resizing well enough to check by pixel.
"""

from __future__ import annotations

import io
import math
import random
import struct
import zipfile
import zlib
from collections.abc import Callable, Sequence

from PIL import Image, ImageCms, ImageDraw, PngImagePlugin

RGB = tuple[int, int, int]

#: Upright quadrant colours of the oriented test images: top-left, top-right,
#: bottom-left, bottom-right. Red top-left makes every orientation visible.
QUADRANTS: tuple[RGB, RGB, RGB, RGB] = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255))

#: The size of the upright oriented images; not square, so a swap shows.
ORIENTED_SIZE = (120, 80)

#: Comment text of the metadata-laden JPEG, to look for in outputs.
SECRET_COMMENT = b"profiled-secret-comment"

#: Name of the ICC profiles built here, to look for in outputs.
TEST_ICC_NAME = "profiled test profile"

# Per EXIF orientation, the transpose that turns the stored pixels upright (as
# ImageOps.exif_transpose does); the stored pixels are made with its inverse.
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_INVERSE = {
    Image.Transpose.ROTATE_90: Image.Transpose.ROTATE_270,
    Image.Transpose.ROTATE_270: Image.Transpose.ROTATE_90,
}


def _save(im: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    im.save(out, fmt, **params)
    return out.getvalue()


def quadrants(size: tuple[int, int] = ORIENTED_SIZE, mode: str = "RGB") -> Image.Image:
    """An image of four flat quadrants in ``QUADRANTS`` colours."""
    w, h = size
    im = Image.new("RGB", size)
    draw = ImageDraw.Draw(im)
    draw.rectangle((0, 0, w // 2 - 1, h // 2 - 1), fill=QUADRANTS[0])
    draw.rectangle((w // 2, 0, w - 1, h // 2 - 1), fill=QUADRANTS[1])
    draw.rectangle((0, h // 2, w // 2 - 1, h - 1), fill=QUADRANTS[2])
    draw.rectangle((w // 2, h // 2, w - 1, h - 1), fill=QUADRANTS[3])
    return im.convert(mode)


def flat(size: tuple[int, int], colour: object, mode: str = "RGB") -> Image.Image:
    """A flat image of one colour."""
    return Image.new(mode, size, colour)  # type: ignore[arg-type]


def jpeg(size: tuple[int, int] = (64, 64), colour: RGB = (200, 100, 50), **params: object) -> bytes:
    """A flat RGB JPEG."""
    return _save(flat(size, colour), "JPEG", quality=95, **params)


def jpeg_oriented(orientation: int, size: tuple[int, int] = ORIENTED_SIZE) -> bytes:
    """A JPEG whose upright view (after its EXIF orientation) is ``quadrants(size)``."""
    upright = quadrants(size)
    stored = upright
    if orientation in _UPRIGHT:
        method = _UPRIGHT[orientation]
        stored = upright.transpose(_INVERSE.get(method, method))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _save(stored, "JPEG", quality=95, exif=exif.tobytes())


def camera_jpeg(size: tuple[int, int] = (4000, 3000), seed: int = 1) -> bytes:
    """A photo-like JPEG (smooth gradients plus noise), for speed measurements."""
    small = Image.new("RGB", (64, 48))
    rnd = random.Random(seed)
    small.putdata(
        [(rnd.randrange(256), rnd.randrange(256), rnd.randrange(256)) for _ in range(64 * 48)]
    )
    im = small.resize(size, Image.Resampling.BICUBIC)
    # Sensor-like noise: uniform, a third of full range (a deviation of about 24).
    noise = _noise(size, seed).point(lambda v: 128 + (v - 128) // 3).convert("RGB")
    im = Image.blend(im, noise, 0.15)
    exif = Image.Exif()
    exif[0x0112] = 6
    return _save(im, "JPEG", quality=90, exif=exif.tobytes())


def _noise(size: tuple[int, int], seed: int) -> Image.Image:
    """Uniform grey noise, the same for the same seed (unlike Image.effect_noise)."""
    return Image.frombytes("L", size, random.Random(seed).randbytes(size[0] * size[1]))


def gray_jpeg(size: tuple[int, int] = (64, 64), level: int = 128) -> bytes:
    """A flat grayscale (mode L) JPEG."""
    return _save(flat(size, level, "L"), "JPEG", quality=95)


def gray_png(size: tuple[int, int] = (64, 64), level: int = 128) -> bytes:
    """A flat grayscale (mode L) PNG."""
    return _save(flat(size, level, "L"), "PNG")


def la_png(size: tuple[int, int] = (64, 64), level: int = 100, alpha: int = 128) -> bytes:
    """A flat grayscale PNG with a half-transparent alpha channel (mode LA)."""
    return _save(flat(size, (level, alpha), "LA"), "PNG")


def rgba_png(size: tuple[int, int] = (64, 64), alpha: int = 128) -> bytes:
    """An RGBA PNG: opaque red left half, ``alpha``-transparent blue right half.

    With ``alpha=255`` the alpha channel is present but fully opaque.
    """
    w, h = size
    im = Image.new("RGBA", size, (255, 0, 0, 255))
    im.paste((0, 0, 255, alpha), (w // 2, 0, w, h))
    return _save(im, "PNG")


def palette_png(size: tuple[int, int] = (64, 64)) -> bytes:
    """A palette PNG whose left half is the transparent palette entry."""
    w, h = size
    im = Image.new("P", size, 1)
    im.putpalette([0, 0, 0, 0, 200, 0] + [0, 0, 0] * 254)
    im.paste(0, (0, 0, w // 2, h))
    return _save(im, "PNG", transparency=0)


def png16(
    size: tuple[int, int] = (64, 64), levels: Sequence[int] = (0, 16384, 32768, 65535)
) -> bytes:
    """A 16-bit grayscale PNG (mode I;16) in vertical bands of ``levels``."""
    w, h = size
    im = Image.new("I;16", size)
    band = max(1, w // len(levels))
    for i, level in enumerate(levels):
        right = w if i == len(levels) - 1 else (i + 1) * band
        # Pasting a number into an I;16 image clips it; pasting an image does not.
        im.paste(Image.new("I;16", (right - i * band, h), level), (i * band, 0))
    return _save(im, "PNG")


def png_raw(
    width: int,
    height: int,
    colour_type: int,
    bit_depth: int,
    pixel: bytes,
    chunks: Sequence[tuple[bytes, bytes]] = (),
) -> bytes:
    """A PNG built by hand: every pixel is ``pixel`` (raw sample bytes).

    For formats Pillow cannot write, such as 16-bit RGB(A); ``chunks`` go
    between IHDR and IDAT.
    """
    row = b"\x00" + pixel * width
    data = zlib.compress(row * height)
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    body = [_png_chunk(b"IHDR", ihdr), *(_png_chunk(k, v) for k, v in chunks)]
    return b"\x89PNG\r\n\x1a\n" + b"".join(body) + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND")


def png16_rgb(
    width: int = 32, height: int = 32, rgb16: tuple[int, int, int] = (0, 32896, 65535)
) -> bytes:
    """A flat 16-bit-per-channel RGB PNG."""
    return png_raw(width, height, 2, 16, struct.pack(">HHH", *rgb16))


def _png_chunk(kind: bytes, data: bytes = b"") -> bytes:
    crc = zlib.crc32(kind + data)
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def animated_gif(
    size: tuple[int, int] = (48, 48),
    colours: Sequence[RGB] = ((255, 0, 0), (0, 255, 0), (0, 0, 255)),
) -> bytes:
    """An animated GIF with one flat frame per colour."""
    frames = [flat(size, c) for c in colours]
    return _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def gif(size: tuple[int, int] = (48, 48), colour: RGB = (255, 0, 0)) -> bytes:
    """A still GIF of one colour."""
    return _save(flat(size, colour), "GIF")


def noise_gif(size: tuple[int, int] = (200, 200)) -> bytes:
    """A still GIF of noise: its LZW data is long, so a cut lands inside it."""
    return _save(_noise(size, 0).convert("P"), "GIF")


def apng(
    size: tuple[int, int] = (48, 48), colours: Sequence[RGB] = ((255, 0, 0), (0, 0, 255))
) -> bytes:
    """An animated PNG with one flat frame per colour."""
    frames = [flat(size, c) for c in colours]
    return _save(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=100)


def webp_lossy(size: tuple[int, int] = (64, 48), colour: RGB = (200, 100, 50)) -> bytes:
    """A lossy WebP (VP8)."""
    return _save(flat(size, colour), "WEBP", quality=90)


def webp_lossless(size: tuple[int, int] = (64, 48), colour: RGB = (200, 100, 50)) -> bytes:
    """A lossless WebP (VP8L)."""
    return _save(flat(size, colour), "WEBP", lossless=True)


def webp_alpha(size: tuple[int, int] = (64, 48)) -> bytes:
    """A lossy WebP with an alpha channel (VP8X + ALPH)."""
    w, h = size
    im = Image.new("RGBA", size, (255, 0, 0, 255))
    im.paste((0, 0, 255, 0), (w // 2, 0, w, h))
    return _save(im, "WEBP", quality=90)


def webp_animated(
    size: tuple[int, int] = (48, 48), colours: Sequence[RGB] = ((255, 0, 0), (0, 255, 0))
) -> bytes:
    """An animated WebP with one flat frame per colour."""
    frames = [flat(size, c) for c in colours]
    return _save(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100)


def avif(size: tuple[int, int] = (64, 48), colour: RGB = (200, 100, 50)) -> bytes:
    """A still AVIF."""
    return _save(flat(size, colour), "AVIF", quality=90)


def avif_alpha(size: tuple[int, int] = (64, 48)) -> bytes:
    """An AVIF with an alpha channel: opaque red left half, transparent right half."""
    w, h = size
    im = Image.new("RGBA", size, (255, 0, 0, 255))
    im.paste((0, 0, 255, 0), (w // 2, 0, w, h))
    return _save(im, "AVIF", quality=90)


def avif_quadrants(size: tuple[int, int] = ORIENTED_SIZE) -> bytes:
    """An AVIF of ``quadrants(size)``."""
    return _save(quadrants(size), "AVIF", quality=90)


# --- colour profiles -------------------------------------------------------


def srgb_icc() -> bytes:
    """LittleCMS's built-in sRGB profile, as bytes."""
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


# sRGB primaries adapted to D50, the profile connection space's white.
_SRGB_D50 = {
    "r": (0.4361, 0.2225, 0.0139),
    "g": (0.3851, 0.7169, 0.0971),
    "b": (0.1431, 0.0606, 0.7141),
}
_D50 = (0.9642, 1.0, 0.8249)


def rgb_icc(primaries: tuple[str, str, str] = ("g", "b", "r"), gamma: float = 2.2) -> bytes:
    """A matrix/TRC RGB profile whose channels carry the given sRGB primaries.

    The default ("g", "b", "r") is a deliberately odd profile: a pixel stored
    as pure red means sRGB green under it. An image that comes out green has
    been converted through its embedded profile; one that comes out red has not.
    """
    tags = {
        b"desc": _icc_desc(TEST_ICC_NAME),
        b"cprt": _icc_text("public domain"),
        b"wtpt": _icc_xyz(_D50),
        b"rXYZ": _icc_xyz(_SRGB_D50[primaries[0]]),
        b"gXYZ": _icc_xyz(_SRGB_D50[primaries[1]]),
        b"bXYZ": _icc_xyz(_SRGB_D50[primaries[2]]),
        b"rTRC": _icc_gamma(gamma),
        b"gTRC": _icc_gamma(gamma),
        b"bTRC": _icc_gamma(gamma),
    }
    return _icc(b"mntr", b"RGB ", b"XYZ ", tags)


#: sRGB colours of the inks of the synthetic CMYK profile (roughly SWOP-like).
CMYK_INKS: dict[str, RGB] = {
    "c": (0, 174, 239),
    "m": (236, 0, 140),
    "y": (255, 242, 0),
    "k": (35, 31, 32),
}


def cmyk_icc(grid: int = 5) -> bytes:
    """A synthetic CMYK printer profile (an A2B0 lut16 table, PCS Lab).

    No CMYK profile ships with Pillow or the system, so this one is built here:
    each ink filters paper white multiplicatively, in linear light, with the
    colours of ``CMYK_INKS``. Full cyan comes out as (0, 174, 239) through it,
    clearly unlike the (0, 255, 255) of a plain conversion without profile.
    """
    return _icc(
        b"prtr",
        b"CMYK",
        b"Lab ",
        {
            b"desc": _icc_desc(TEST_ICC_NAME),
            b"cprt": _icc_text("public domain"),
            b"wtpt": _icc_xyz(_D50),
            b"A2B0": _icc_lut16(grid, _cmyk_to_lab),
        },
    )


def _cmyk_to_lab(cmyk: Sequence[float]) -> tuple[float, float, float]:
    linear = [1.0, 1.0, 1.0]
    for amount, ink in zip(cmyk, "cmyk", strict=True):
        for i, v in enumerate(CMYK_INKS[ink]):
            linear[i] *= _srgb_to_linear(v / 255) ** amount
    return _linear_srgb_to_lab(linear)


def _srgb_to_linear(v: float) -> float:
    return v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4


def _linear_srgb_to_lab(rgb: Sequence[float]) -> tuple[float, float, float]:
    r, g, b = rgb
    cols = [_SRGB_D50["r"], _SRGB_D50["g"], _SRGB_D50["b"]]
    xyz = [r * cols[0][i] + g * cols[1][i] + b * cols[2][i] for i in range(3)]

    def f(t: float) -> float:
        return t ** (1 / 3) if t > (6 / 29) ** 3 else t / (3 * (6 / 29) ** 2) + 4 / 29

    fx, fy, fz = (f(xyz[i] / _D50[i]) for i in range(3))
    return 116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)


def _icc(device_class: bytes, space: bytes, pcs: bytes, tags: dict[bytes, bytes]) -> bytes:
    """Assemble an ICC v2.1 profile from its tag payloads."""
    table = b""
    data = b""
    offset = 128 + 4 + 12 * len(tags)
    for sig, payload in tags.items():
        payload += b"\x00" * (-len(payload) % 4)
        table += sig + struct.pack(">II", offset + len(data), len(payload))
        data += payload
    size = offset + len(data)
    header = (
        struct.pack(">I", size)
        + b"\x00" * 4
        + b"\x02\x10\x00\x00"
        + device_class
        + space
        + pcs
        + struct.pack(">6H", 2024, 1, 1, 0, 0, 0)
        + b"acsp"
        + b"\x00" * 24
        + struct.pack(">I", 0)  # rendering intent: perceptual
        + b"".join(_s15(v) for v in _D50)
        + b"\x00" * 48
    )
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + data


def _s15(v: float) -> bytes:
    return struct.pack(">i", round(v * 65536))


def _icc_xyz(xyz: Sequence[float]) -> bytes:
    return b"XYZ \x00\x00\x00\x00" + b"".join(_s15(v) for v in xyz)


def _icc_text(text: str) -> bytes:
    return b"text\x00\x00\x00\x00" + text.encode("ascii") + b"\x00"


def _icc_desc(text: str) -> bytes:
    ascii_ = text.encode("ascii") + b"\x00"
    return (
        b"desc\x00\x00\x00\x00"
        + struct.pack(">I", len(ascii_))
        + ascii_
        + b"\x00" * 8  # no Unicode description
        + b"\x00\x00\x00"  # no ScriptCode description
        + b"\x00" * 67
    )


def _icc_gamma(gamma: float) -> bytes:
    return b"curv\x00\x00\x00\x00" + struct.pack(">IH", 1, round(gamma * 256))


def _icc_lut16(grid: int, func: Callable[[Sequence[float]], tuple[float, float, float]]) -> bytes:
    """A 4-in, 3-out lut16Type with identity curves and a ``grid``^4 table."""
    out = bytearray(b"mft2\x00\x00\x00\x00")
    out += bytes((4, 3, grid, 0))
    for i in range(9):  # identity matrix (unused for a CMYK input)
        out += _s15(1.0 if i in (0, 4, 8) else 0.0)
    out += struct.pack(">HH", 2, 2)
    out += struct.pack(">HH", 0, 65535) * 4
    steps = [i / (grid - 1) for i in range(grid)]
    for c in steps:
        for m in steps:
            for y in steps:
                for k in steps:
                    lab_l, lab_a, lab_b = func((c, m, y, k))
                    # ICC v2 16-bit Lab encoding.
                    out += struct.pack(
                        ">HHH",
                        _clamp16(lab_l * 65280 / 100),
                        _clamp16((lab_a + 128) * 256),
                        _clamp16((lab_b + 128) * 256),
                    )
    out += struct.pack(">HH", 0, 65535) * 3
    return bytes(out)


def _clamp16(v: float) -> int:
    return max(0, min(65535, round(v)))


def cmyk_jpeg(with_icc: bool = True, size: tuple[int, int] = (80, 40)) -> bytes:
    """A CMYK JPEG of four patches, left to right: cyan, magenta, yellow, black.

    Pillow writes it with an Adobe marker and inverted samples, as Photoshop does.
    """
    im = Image.new("CMYK", size, (0, 0, 0, 0))
    w, h = size
    inks = [(255, 0, 0, 0), (0, 255, 0, 0), (0, 0, 255, 0), (0, 0, 0, 255)]
    for i, ink in enumerate(inks):
        im.paste(ink, (i * w // 4, 0, (i + 1) * w // 4, h))
    params: dict[str, object] = {"quality": 95}
    if with_icc:
        params["icc_profile"] = cmyk_icc()
    return _save(im, "JPEG", **params)


def icc_jpeg(icc: bytes, size: tuple[int, int] = (64, 64), colour: RGB = (255, 0, 0)) -> bytes:
    """A flat RGB JPEG carrying the given ICC profile."""
    return _save(flat(size, colour), "JPEG", quality=95, icc_profile=icc)


def icc_png(icc: bytes, size: tuple[int, int] = (64, 64), colour: RGB = (255, 0, 0)) -> bytes:
    """A flat RGB PNG carrying the given ICC profile."""
    return _save(flat(size, colour), "PNG", icc_profile=icc)


# --- metadata and payloads -------------------------------------------------

XMP_PACKET = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
    b'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description xmlns:xmp="http://ns.adobe.com/xap/1.0/" '
    b'xmp:CreatorTool="profiled-secret-tool"/></rdf:RDF></x:xmpmeta>'
)


def zip_payload() -> bytes:
    """A small ZIP archive, to hide after an image's end."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("payload.txt", "profiled secret payload")
    return out.getvalue()


def metadata_jpeg(size: tuple[int, int] = (640, 480)) -> bytes:
    """A JPEG with EXIF (GPS included), XMP, a comment, an ICC profile and a ZIP after EOI."""
    exif = Image.Exif()
    exif[0x010F] = "profiled-secret-camera"  # Make
    exif[0x0131] = "profiled-secret-software"  # Software
    gps = exif.get_ifd(0x8825)
    gps[1] = "N"
    gps[2] = (48.0, 51.0, 29.0)
    gps[3] = "E"
    gps[4] = (2.0, 17.0, 40.0)
    body = _save(
        quadrants(size),
        "JPEG",
        quality=90,
        exif=exif.tobytes(),
        xmp=XMP_PACKET,
        comment=SECRET_COMMENT,
        icc_profile=rgb_icc(("r", "g", "b")),
    )
    return body + zip_payload()


def metadata_png(size: tuple[int, int] = (64, 64)) -> bytes:
    """An RGBA PNG with text, EXIF and ICC chunks, and a ZIP after IEND."""
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", SECRET_COMMENT.decode())
    info.add_itxt("XML:com.adobe.xmp", XMP_PACKET.decode())
    exif = Image.Exif()
    exif[0x010F] = "profiled-secret-camera"
    im = Image.new("RGBA", size, (255, 0, 0, 128))
    body = _save(im, "PNG", pnginfo=info, exif=exif.tobytes(), icc_profile=rgb_icc(("r", "g", "b")))
    return body + zip_payload()


# --- broken, hostile and foreign files ------------------------------------


def truncated(data: bytes, keep: float = 0.5) -> bytes:
    """The first ``keep`` fraction of ``data``."""
    return data[: max(1, int(len(data) * keep))]


def declared_png(width: int = 30000, height: int = 30000) -> bytes:
    """A tiny PNG whose IHDR declares a huge image (a decompression bomb's header)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND")
    )


def memory_bomb_png(width: int = 6000, height: int = 6000) -> bytes:
    """A valid, fully transparent RGBA PNG: under 1 MB on disk, width*height*4 bytes decoded.

    Within the default pixel limit, so only a memory limit stops it.
    """
    row = bytes(1 + width * 4)
    z = zlib.compressobj(1)
    data = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", data)
        + _png_chunk(b"IEND")
    )


def declared_jpeg(width: int = 30000, height: int = 30000) -> bytes:
    """A tiny JPEG whose frame header declares a huge image.

    A real small JPEG with its SOF0 dimensions rewritten, so everything but the
    size is valid.
    """
    data = bytearray(jpeg((16, 16)))
    pos = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, pos + 5, height, width)
    return bytes(data)


def declared_gif(width: int = 30000, height: int = 30000) -> bytes:
    """A tiny GIF whose logical screen and only frame declare a huge image."""
    return (
        b"GIF89a"
        + struct.pack("<HHBBB", width, height, 0x80, 0, 0)
        + b"\x00\x00\x00\xff\xff\xff"
        + b"\x2c"
        + struct.pack("<HHHHB", 0, 0, width, height, 0)
        + b"\x02\x02\x44\x01\x00"
        + b"\x3b"
    )


def declared_gif_frame(width: int = 30000, height: int = 30000) -> bytes:
    """A GIF with a 1x1 logical screen and one frame declaring a huge image."""
    data = bytearray(declared_gif(width, height))
    struct.pack_into("<HH", data, 6, 1, 1)
    return bytes(data)


def declared_webp(width: int = 30000, height: int = 30000) -> bytes:
    """A tiny extended WebP (VP8X) whose canvas declares a huge image."""
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00"
    vp8x += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    inner = webp_lossy((16, 16))[12:]  # the VP8 chunk of a real image
    body = b"WEBP" + vp8x + inner
    return b"RIFF" + struct.pack("<I", len(body)) + body


def random_bytes(n: int = 4096, seed: int = 0) -> bytes:
    """Reproducible random bytes."""
    return random.Random(seed).randbytes(n)


def svg() -> bytes:
    """A small SVG document (with a script, as a hostile upload would have)."""
    return (
        b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" '
        b'height="10"><script>alert(1)</script><rect width="10" height="10"/></svg>'
    )


def html() -> bytes:
    """A small HTML document."""
    return b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>"


def bmp(size: tuple[int, int] = (16, 16)) -> bytes:
    """A BMP, a real image format that is not allowed."""
    return _save(flat(size, (1, 2, 3)), "BMP")


def tiff(size: tuple[int, int] = (16, 16)) -> bytes:
    """A TIFF, a real image format that is not allowed."""
    return _save(flat(size, (1, 2, 3)), "TIFF")


def gradient_png(size: tuple[int, int] = (1200, 1200)) -> bytes:
    """An RGBA PNG with smooth gradients and a soft alpha edge, for speed measurements."""
    im = Image.linear_gradient("L").resize(size)
    rgb = Image.merge("RGB", (im, im.transpose(Image.Transpose.ROTATE_90), im.rotate(45)))
    alpha = Image.radial_gradient("L").resize(size).point(lambda v: 255 - v)
    rgba = rgb.convert("RGBA")
    rgba.putalpha(alpha)
    return _save(rgba, "PNG")


def distance(a: Sequence[float], b: Sequence[float]) -> float:
    """Euclidean distance between two colours (for tolerant pixel checks)."""
    return math.dist(a, b)
