"""Photos for end-to-end tests: small, but with what real ones carry."""

from __future__ import annotations

import io

from PIL import Image

RED = (220, 20, 20)
WHITE = (245, 245, 245)


def upright_marked(width: int = 300, height: int = 400) -> Image.Image:
    """A portrait picture whose top-left quadrant is red, the rest white."""
    im = Image.new("RGB", (width, height), WHITE)
    im.paste(RED, (0, 0, width // 2, height // 2))
    return im


def sideways_jpeg(width: int = 300, height: int = 400) -> bytes:
    """A JPEG stored rotated, with EXIF orientation 6 (display rotated 90 degrees clockwise).

    Shown correctly it is ``upright_marked(width, height)``; it also carries
    GPS tags and a comment that must never come back.
    """
    stored = upright_marked(width, height).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x8825] = {1: "N", 2: (52.0, 31.0, 12.0), 3: "E", 4: (13.0, 24.0, 0.0)}
    buf = io.BytesIO()
    stored.save(buf, "JPEG", quality=90, exif=exif, comment=b"uploader-secret-comment")
    return buf.getvalue()


def is_red(pixel: tuple[int, ...]) -> bool:
    r, g, b = pixel[:3]
    return r > 150 and g < 100 and b < 100


def is_white(pixel: tuple[int, ...]) -> bool:
    return all(c > 200 for c in pixel[:3])


def looks_upright(data: bytes) -> tuple[int, int]:
    """Assert the variant is the upright picture; return its size."""
    im = Image.open(io.BytesIO(data))
    im.load()
    w, h = im.size
    assert h > w, f"expected portrait, got {w}x{h}"
    rgb = im.convert("RGB")
    assert is_red(rgb.getpixel((w // 4, h // 4))), "top-left should be red"
    assert is_white(rgb.getpixel((3 * w // 4, h // 4))), "top-right should be white"
    assert is_white(rgb.getpixel((w // 4, 3 * h // 4))), "bottom-left should be white"
    return w, h
