"""Turn one uploaded image into its variants: pure functions over files, Pillow only.

The steps, in the order that keeps them cheap and correct:

1. Sniff the magic bytes and read the header (``sniff``), check the limits:
   nothing is decoded for a file that is not an allowed format or is too big.
2. Open with Pillow restricted to that one format, check Pillow's idea of the
   size and the frame count too.
3. For JPEG, ``draft()``: let libjpeg scale by 1/2, 1/4 or 1/8 in the DCT,
   to the smallest scale still covering the largest variant. Only the first
   frame of an animation is ever decoded.
4. Resize to the largest variant (in the stored orientation: boxes are square,
   so orientation swaps both sides alike), then turn it upright, then convert
   it to sRGB through its ICC profile. Doing colour and orientation on the
   small image instead of the source is what makes a 12 MP photo cheap.
5. Each smaller variant is made from the one before it (600 -> 200 -> 100).
6. Encode from a fresh image holding nothing but pixels: progressive JPEG for
   opaque images, PNG when the alpha channel is really used. Nothing of the
   upload (EXIF, XMP, comments, ICC, text chunks, trailing bytes) can survive.

Every failure is a ``CrunchFailed`` with one of ``REASONS``, so the worker can
record why an image failed without ever seeing a decoder's exception.
"""

from __future__ import annotations

import functools
import io
import math
import os
import re
import struct
import warnings
import zlib
from collections.abc import Iterable, Mapping
from typing import IO

import attrs
from PIL import Image, ImageChops, ImageCms, ImageFile, UnidentifiedImageError, features

from profiled.crunch.sniff import (
    FORMATS,
    HEADER_BYTES_MAX,
    HeaderError,
    HeaderInfo,
    ImageLimits,
    check_limits,
    read_header,
    sniff,
)

__all__ = [
    "REASONS",
    "CrunchFailed",
    "CrunchResult",
    "CrunchSpec",
    "VariantFile",
    "configure_pillow",
    "crunch",
]

#: Why an image can fail. The first five are the image's own fault and will not
#: change on a retry; ``timeout`` and ``out_of_memory`` are too, almost always;
#: ``crashed`` may be the machine's (a child killed, an I/O error on the spool).
REASONS = (
    "corrupt",
    "unsupported",
    "too_many_pixels",
    "too_large",
    "too_many_frames",
    "timeout",
    "out_of_memory",
    "crashed",
)

# Our format names -> Pillow's plugin names, and back (an MPO is a JPEG).
_PILLOW_FORMATS = {"jpeg": "JPEG", "png": "PNG", "gif": "GIF", "webp": "WEBP", "avif": "AVIF"}
_FROM_PILLOW = {"JPEG": "jpeg", "MPO": "jpeg", "PNG": "png", "GIF": "gif", "WEBP": "webp"}
_FROM_PILLOW["AVIF"] = "avif"

# Variant names become file names, and the worker's store keys.
_VARIANT_NAME = re.compile(r"[a-z][a-z0-9]{0,31}")

# EXIF orientation -> the transpose that makes the stored pixels upright.
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

# Alpha is resampled premultiplied; these name the modes on either side.
_PREMULTIPLIED = {"LA": "La", "RGBA": "RGBa"}
_STRAIGHT = {"La": "LA", "RGBa": "RGBA"}

# Resampling. The first, large step (source or DCT-scaled source -> largest
# variant) uses bicubic: two thirds of Lanczos' taps, and after JPEG encoding
# within 0.03 dB of Lanczos all the way (PSNR against a full-resolution Lanczos
# reference, docs/benchmarks.md). Above twice ``_REDUCING_GAP`` Pillow first
# reduces by an integer factor (a box filter over whole pixels), much faster
# and hardly distinguishable (Pillow's thumbnail default). The smaller
# variants, made from the one before, use Lanczos: their sharpness shows.
_FIRST_FILTER = Image.Resampling.BICUBIC
_FILTER = Image.Resampling.LANCZOS
_REDUCING_GAP = 2.0
# Images with transparency become PNG, where no JPEG quantisation hides how
# a variant was resampled; yet a box reduction by the largest whole factor
# (half a 1200x1200 image: a 2x2 mean) keeps their largest variant at 52-53
# dB against the Lanczos reference, within 0.4 dB of libvips' lanczos3 either
# way on cut-outs of 1200-2600 px, and makes that step five times cheaper
# (premultiplied bicubic 1200 -> 600: about 15 ms; reduce: 2.5). Opaque
# images keep the gap of 2: there, over JPEG, a gap of 1 costs up to 0.15 dB
# (docs/benchmarks.md).
_ALPHA_REDUCING_GAP = 1.0

# PNG (written by ``_png``): the Up row filter, zlib level 3. zlib's RLE
# strategy is faster and, on photo-like pixels (a cut-out portrait), smaller
# too, but up to twice as large on drawings; so it is used only for a variant
# with more than ``_PNG_RLE_COLOURS`` distinct colours (counting stops there,
# so the check costs next to nothing on photos), which drawings, even
# anti-aliased ones, stay under.
_PNG_LEVEL = 3
_PNG_RLE_COLOURS = 8192
_PNG_BAND_BYTES = 1 << 20
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOUR_TYPES = {"L": 0, "RGB": 2, "LA": 4, "RGBA": 6}
_PNG_UP = b"\x02"

# What a decoder raises on a hostile or broken file. Anything else is our bug.
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    struct.error,
    zlib.error,
    ZeroDivisionError,
    OverflowError,
    RecursionError,
    RuntimeError,  # Pillow's AVIF decoder: "Failed to decode frame 0: ..."
)


class CrunchFailed(Exception):
    """An image could not be crunched; ``reason`` is one of ``REASONS``.

    ``detail`` is short human text for logs and the failed image's record,
    never a stack trace or image bytes.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown crunch failure reason {reason!r}")
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}" if self.detail else self.reason


def _variants(value: Iterable[tuple[str, int]] | Mapping[str, int]) -> tuple[tuple[str, int], ...]:
    """Accept the config's name -> box mapping as well as pairs (JSON gives lists)."""
    items = value.items() if isinstance(value, Mapping) else value
    return tuple((str(name), int(box)) for name, box in items)


def _check_variants(_: object, __: object, value: tuple[tuple[str, int], ...]) -> None:
    if not value:
        raise ValueError("variants: at least one is needed")
    names = [name for name, _ in value]
    if len(set(names)) != len(names):
        raise ValueError("variants: names must be unique")
    for name, box in value:
        if not _VARIANT_NAME.fullmatch(name):
            raise ValueError(f"variants: bad name {name!r}")
        if box < 1:
            raise ValueError(f"variants: box of {name!r} must be at least 1")


@attrs.frozen
class CrunchSpec:
    """What to make of an image: the variants (name -> square box side) and how."""

    variants: tuple[tuple[str, int], ...] = attrs.field(
        default=(("default", 200), ("small", 100), ("large", 600)),
        converter=_variants,
        validator=_check_variants,
    )
    #: "fit": inside the box, keeping the aspect ratio, never enlarged.
    #: "cover": centre-cropped to the exact square, never enlarged (a smaller
    #: image gives the largest square it has).
    mode: str = attrs.field(default="fit", validator=attrs.validators.in_(("fit", "cover")))
    jpeg_quality: int = attrs.field(
        default=85, validator=[attrs.validators.ge(1), attrs.validators.le(100)]
    )
    limits: ImageLimits = attrs.field(factory=ImageLimits)
    formats: tuple[str, ...] = attrs.field(
        default=("jpeg", "png", "gif", "webp", "avif"),
        converter=tuple,
        validator=attrs.validators.deep_iterable(attrs.validators.in_(tuple(FORMATS))),
    )


@attrs.frozen
class VariantFile:
    """One variant written to disk."""

    name: str
    path: str
    content_type: str
    width: int
    height: int
    size: int


@attrs.frozen
class CrunchResult:
    """The variants of one image; width and height are those of the upright source."""

    source_format: str
    width: int
    height: int
    variants: tuple[VariantFile, ...]


def configure_pillow(limits: ImageLimits) -> None:
    """Set Pillow's process-wide safety switches; call once when a crunch process starts.

    ``crunch()`` checks the limits itself before decoding; these make Pillow
    refuse on its own too (a decompression bomb warning becomes an error), and
    make a truncated file an error instead of a half-grey image. AVIF decoding
    is kept to one thread: a crunch child has one core's worth of work and a
    small address space.
    """
    Image.MAX_IMAGE_PIXELS = limits.max_pixels
    warnings.simplefilter("error", Image.DecompressionBombWarning)
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        from PIL import AvifImagePlugin
    except ImportError:  # pragma: no cover - Pillow built without AVIF
        return
    AvifImagePlugin.DEFAULT_MAX_THREADS = 1


def crunch(src_path: str, out_dir: str, spec: CrunchSpec) -> CrunchResult:
    """Write every variant of the image at ``src_path`` into ``out_dir``.

    Files are named after the variants. Raises ``CrunchFailed`` and nothing
    else (a bug in here is reported as ``crashed``, its type in the detail).
    """
    try:
        return _crunch(src_path, out_dir, spec)
    except CrunchFailed:
        raise
    except MemoryError:
        raise CrunchFailed("out_of_memory", "ran out of memory") from None
    except Exception as e:
        raise CrunchFailed("crashed", f"internal error: {type(e).__name__}") from e


def _crunch(src_path: str, out_dir: str, spec: CrunchSpec) -> CrunchResult:
    try:
        f = open(src_path, "rb")  # closed by the with below
    except OSError as e:
        raise CrunchFailed("crashed", f"cannot read the source: {e.strerror}") from None
    with f:
        try:
            head = f.read(HEADER_BYTES_MAX)
        except OSError as e:
            raise CrunchFailed("crashed", f"cannot read the source: {e.strerror}") from None
        fmt = _check_header(head, spec)
        f.seek(0)
        size, content_type, images = _render(f, fmt, spec)
    files = []
    encoded: dict[int, bytes] = {}
    for name, im in images:
        data = encoded.get(id(im))
        if data is None:
            data = encoded[id(im)] = _encode(im, content_type, spec)
        path = os.path.join(out_dir, name)
        try:
            with open(path, "wb") as out:
                out.write(data)
        except OSError as e:
            raise CrunchFailed("crashed", f"cannot write a variant: {e.strerror}") from None
        files.append(VariantFile(name, path, content_type, im.width, im.height, len(data)))
    return CrunchResult(fmt, size[0], size[1], tuple(files))


def _check_header(head: bytes, spec: CrunchSpec) -> str:
    """Refuse from the first bytes alone: the format, then the declared size."""
    fmt = sniff(head)
    if fmt is None or fmt not in spec.formats:
        raise CrunchFailed("unsupported", "not an allowed image format")
    if not _pillow_supports(fmt):
        raise CrunchFailed("unsupported", f"no {fmt} decoder available")
    try:
        info = read_header(head, fmt)
    except HeaderError as e:
        raise CrunchFailed("corrupt", str(e)) from None
    if info is not None:
        reason = check_limits(info, spec.limits)
        if reason is not None:
            raise CrunchFailed(reason, _limit_detail(reason, info.width, info.height, info.frames))
    return fmt


@functools.cache
def _pillow_supports(fmt: str) -> bool:
    return fmt != "avif" or bool(features.check("avif"))


def _limit_detail(reason: str, width: int, height: int, frames: int | None) -> str:
    if reason == "too_many_frames":
        return f"{frames} frames"
    return f"{width}x{height} pixels"


def _check_size(width: int, height: int, frames: int, limits: ImageLimits) -> None:
    reason = check_limits(HeaderInfo("", width, height, frames), limits)
    if reason is not None:
        raise CrunchFailed(reason, _limit_detail(reason, width, height, frames))


def _render(
    f: IO[bytes], fmt: str, spec: CrunchSpec
) -> tuple[tuple[int, int], str, list[tuple[str, Image.Image]]]:
    """Decode and resize, mapping every decoder exception to a reason.

    Returns the upright source size, the output content type and the variant
    images in spec order (equal ones may be the same object).
    """
    try:
        return _render_unchecked(f, fmt, spec)
    except CrunchFailed:
        raise
    except MemoryError:
        raise CrunchFailed("out_of_memory", "ran out of memory while decoding") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise CrunchFailed("too_many_pixels", "over the pixel limit") from None
    except UnidentifiedImageError:
        raise CrunchFailed("corrupt", f"not a valid {fmt} file") from None
    except _DECODE_ERRORS as e:
        raise CrunchFailed("corrupt", _short(e, fmt)) from None


def _short(e: BaseException, fmt: str) -> str:
    """A decoder's message, if it is short and plain, else a generic one."""
    text = str(e).split("\n", 1)[0]
    if isinstance(e, OSError | SyntaxError) and text.isascii() and text.isprintable():
        if 0 < len(text) <= 120:
            return text
    return f"{fmt} decoder failed ({type(e).__name__})"


def _render_unchecked(
    f: IO[bytes], fmt: str, spec: CrunchSpec
) -> tuple[tuple[int, int], str, list[tuple[str, Image.Image]]]:
    opened = Image.open(f, formats=[_PILLOW_FORMATS[fmt]])
    if _FROM_PILLOW.get(opened.format or "") != fmt:
        raise CrunchFailed("corrupt", f"not a valid {fmt} file")
    _check_size(opened.width, opened.height, 1, spec.limits)
    frames = getattr(opened, "n_frames", 1)
    if frames > 1:
        _check_size(opened.width, opened.height, frames, spec.limits)
        if opened.tell() != 0:  # pragma: no cover - n_frames seeks back already
            opened.seek(0)
    width, height = opened.size
    boxes = sorted((box for _, box in spec.variants), reverse=True)
    biggest = boxes[0]

    # Where, in stored pixels, the largest variant comes from, and its size.
    crop, target = _first_step(width, height, biggest, spec.mode)
    crop_size = (crop[2] - crop[0], crop[3] - crop[1])
    scale = 1.0
    if opened.format in ("JPEG", "MPO") and target != crop_size:
        # Ask libjpeg for the smallest DCT scale still at least ``target`` in
        # the region we need; draft() answers how the image maps onto it.
        factor = target[0] / crop_size[0]
        needed = (math.ceil(width * factor), math.ceil(height * factor))
        drafted = opened.draft(opened.mode, needed)
        if drafted is not None:
            scale = drafted[1][2] / width
    opened.load()
    icc = opened.info.get("icc_profile")
    orientation = _orientation(opened)
    transposed = orientation in (5, 6, 7, 8)
    upright = (height, width) if transposed else (width, height)

    source, alpha = _resizable(opened)
    del opened
    region = (crop[0] * scale, crop[1] * scale, crop[2] * scale, crop[3] * scale)
    first: Image.Image
    if target == source.size and region == (0, 0, *source.size):
        first = source
    elif target == crop_size and scale == 1.0:
        first = source.crop(crop)  # a cover crop that needs no resampling
    else:
        gap = _REDUCING_GAP
        if alpha:
            # Resample with premultiplied alpha, as Pillow does inside every
            # RGBA resize, but convert once here and back once per variant
            # when it is encoded (``_encode``), not around every step:
            # cheaper, and faint pixels are not rounded again at each step
            # (the 100 px variant of a cut-out gains 2 dB).
            source = source.convert(_PREMULTIPLIED[source.mode])
            gap = _ALPHA_REDUCING_GAP
        first = source.resize(target, _FIRST_FILTER, box=region, reducing_gap=gap)
    del source
    if orientation in _UPRIGHT:
        first = first.transpose(_UPRIGHT[orientation])
    profile = icc if isinstance(icc, bytes) and icc else None
    if profile and first.mode in _STRAIGHT:
        # A colour profile applies to straight colours, not premultiplied ones.
        straight = _to_srgb(first.convert(_STRAIGHT[first.mode]), alpha, profile)
        first = straight.convert(_PREMULTIPLIED[straight.mode])
    else:
        first = _to_srgb(first, alpha, profile)
    content_type = "image/png" if alpha else "image/jpeg"

    # Smaller variants, each from the next larger one.
    made: dict[int, Image.Image] = {biggest: first}
    previous = first
    for box in boxes[1:]:
        if box in made:
            continue
        size = _final_size(*upright, box, spec.mode)
        made[box] = previous if size == previous.size else previous.resize(size, _FILTER)
        previous = made[box]
    return upright, content_type, [(name, made[box]) for name, box in spec.variants]


def _final_size(width: int, height: int, box: int, mode: str) -> tuple[int, int]:
    """The size of a variant of a ``width`` x ``height`` image in a square ``box``."""
    if mode == "cover":
        side = min(box, width, height)
        return side, side
    if max(width, height) <= box:
        return width, height
    factor = box / max(width, height)
    return max(1, round(width * factor)), max(1, round(height * factor))


def _first_step(
    width: int, height: int, box: int, mode: str
) -> tuple[tuple[int, int, int, int], tuple[int, int]]:
    """The source region and size of the largest variant, in stored orientation.

    Boxes are square, so the stored orientation gives the same sizes swapped.
    """
    if mode == "cover":
        side = min(width, height)
        left = (width - side) // 2
        top = (height - side) // 2
        return (left, top, left + side, top + side), _final_size(width, height, box, mode)
    return (0, 0, width, height), _final_size(width, height, box, mode)


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation, 1 when absent or unreadable (broken EXIF is no reason to fail)."""
    try:
        value = im.getexif().get(0x0112, 1)
    except Exception:
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _resizable(im: Image.Image) -> tuple[Image.Image, bool]:
    """Bring a decoded frame to a mode Lanczos can resize, and say if it has real alpha.

    Palettes and 1-bit images become RGB(A) or L(A); colour keys (tRNS)
    become an alpha channel. An alpha channel that is opaque everywhere is
    dropped here, so such an image is resized without it and saved as JPEG.
    16-bit and CMYK stay as they are until after the resize.
    """
    mode = im.mode
    transparent = im.has_transparency_data
    if mode in ("P", "PA"):
        im = im.convert("RGBA" if transparent else "RGB")
    elif mode == "1":
        im = im.convert("L")
    elif mode in ("L", "RGB") and transparent:
        im = im.convert(mode[0] + "A" if mode == "L" else "RGBA")
    elif mode in ("La", "RGBa"):
        im = im.convert(mode.upper())
    elif mode in ("RGBX", "YCbCr", "HSV", "LAB"):
        im = im.convert("RGB")
    elif mode not in ("L", "LA", "RGB", "RGBA", "CMYK", "I", "F") and not mode.startswith("I;16"):
        im = im.convert("RGBA" if "A" in im.getbands() else "RGB")
    if im.mode in ("LA", "RGBA"):
        if im.getchannel("A").getextrema()[0] == 255:  # type: ignore[index]
            return im.convert(im.mode[:-1]), False
        return im, True
    return im, False


def _to_srgb(im: Image.Image, alpha: bool, icc: bytes | None) -> Image.Image:
    """Make the resized image 8-bit sRGB: mode L, LA, RGB or RGBA.

    Premultiplied La or RGBa is passed through when there is no profile
    to apply (the caller gives a profile straight colours only).

    The embedded ICC profile is used when it fits the pixels; an unusable one
    is ignored (a plain conversion beats failing an avatar over its profile).
    Alpha is set aside while the colours are converted, and put back.
    """
    if im.mode == "I" or im.mode == "F" or im.mode.startswith("I;16"):
        # 16-bit samples: scale to 8 bits (Pillow's plain conversion would clip).
        im = im.convert("I").point(lambda v: v / 257 + 0.5).convert("L")
    if not icc and im.mode in ("L", "LA", "RGB", "RGBA", "La", "RGBa"):
        return im
    band_alpha = None
    if alpha:
        band_alpha = im.getchannel("A")
        im = im.convert(im.mode[:-1])
    converted = _apply_icc(im, icc) if icc else None
    if converted is None:
        converted = im if im.mode in ("L", "RGB") else im.convert("RGB")
    elif im.mode == "L":
        converted = converted.convert("L")  # a grey profile gives neutral RGB
    if band_alpha is not None:
        converted = converted.convert("LA" if converted.mode == "L" else "RGBA")
        converted.putalpha(band_alpha)
    return converted


def _apply_icc(im: Image.Image, icc: bytes) -> Image.Image | None:
    """``im`` converted to sRGB through ``icc``, or ``None`` if the profile is unusable."""
    try:
        transform = _transform(icc, im.mode)
        if transform is None:
            return None
        return ImageCms.applyTransform(im, transform)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None


# Profiles that match each image mode (ICC colour space signatures, as Pillow spells them).
_SPACES = {"RGB": "RGB ", "CMYK": "CMYK", "L": "GRAY"}


@functools.lru_cache(maxsize=8)
def _transform(icc: bytes, mode: str) -> ImageCms.ImageCmsTransform | None:
    """Build (once per profile: camera images share a handful) a transform to sRGB."""
    profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    if profile.profile.xcolor_space != _SPACES.get(mode):
        return None
    intent = ImageCms.getDefaultIntent(profile)
    if intent not in (0, 1, 2, 3):
        intent = ImageCms.Intent.PERCEPTUAL
    return ImageCms.buildTransform(
        profile, _srgb(), mode, "RGB", renderingIntent=ImageCms.Intent(intent)
    )


@functools.cache
def _srgb() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def _encode(im: Image.Image, content_type: str, spec: CrunchSpec) -> bytes:
    """Encode a variant from nothing but its pixels.

    Pillow carries ``info`` through resize and convert, and its JPEG writer
    copies parts of it (the comment, the ICC profile) into the output; an
    image rebuilt from raw pixels has no ``info`` to leak. PNG is written by
    ``_png`` from the pixels alone. Premultiplied alpha (how variants with
    transparency are resampled) is undone here.
    """
    if content_type == "image/png":
        if im.mode in _STRAIGHT:
            im = im.convert(_STRAIGHT[im.mode])
        photo_like = im.getcolors(maxcolors=_PNG_RLE_COLOURS) is None
        return _png(im, zlib.Z_RLE if photo_like else zlib.Z_DEFAULT_STRATEGY)
    clean = Image.frombytes(im.mode, im.size, im.tobytes())
    out = io.BytesIO()
    clean.save(out, "JPEG", quality=spec.jpeg_quality, progressive=True, subsampling="4:2:0")
    return out.getvalue()


def _png(im: Image.Image, strategy: int) -> bytes:
    """The PNG of an 8-bit L, LA, RGB or RGBA image: IHDR, one IDAT, IEND.

    Written here rather than by Pillow because Pillow's writer chooses a row
    filter for every row by trying four of them, which costs more than the
    compression itself (12-16 ms of a 600x600 RGBA variant; no save option
    turns it off). Every row gets the Up filter instead (its difference from
    the row above, computed bytewise by ``ImageChops.subtract_modulo`` on the
    rows seen as one long grey row each), which on photo-like pixels compresses
    within 15% of the adaptive choice. Rows go through zlib in bands of about
    ``_PNG_BAND_BYTES``, so memory stays small for a large variant.
    """
    width, height = im.size
    stride = width * len(im.getbands())
    z = zlib.compressobj(_PNG_LEVEL, zlib.DEFLATED, 15, 9, strategy)
    parts = []
    band = max(1, _PNG_BAND_BYTES // stride)
    for top in range(0, height, band):
        bottom = min(height, top + band)
        rows = bottom - top
        pixels = im.crop((0, max(0, top - 1), width, bottom)).tobytes()
        if top == 0:
            pixels = bytes(stride) + pixels  # the row above the first is zeros
        view = memoryview(pixels)
        lower = Image.frombytes("L", (stride, rows), view[stride:])
        upper = Image.frombytes("L", (stride, rows), view[: rows * stride])
        up = memoryview(ImageChops.subtract_modulo(lower, upper).tobytes())
        filtered = b"".join(
            part for y in range(rows) for part in (_PNG_UP, up[y * stride : (y + 1) * stride])
        )
        parts.append(z.compress(filtered))
    parts.append(z.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, _PNG_COLOUR_TYPES[im.mode], 0, 0, 0)
    return b"".join(
        (
            _PNG_SIGNATURE,
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", b"".join(parts)),
            _chunk(b"IEND", b""),
        )
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC of type and data."""
    crc = zlib.crc32(data, zlib.crc32(kind))
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)
