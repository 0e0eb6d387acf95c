"""The source images of the crunch benchmark, made here, the same bytes every run.

- ``camera-12mp.jpg``: a 4000x3000 photo-like JPEG (smooth colour plus sensor-like
  noise, quality 90, about 3-4 MB) stored sideways with EXIF orientation 6, as
  phones write them.
- ``alpha-1200.png``: a 1200x1200 RGBA PNG, photo-like colour under a soft
  radial alpha (an avatar cut out of a photo).
- ``square-1000.jpg``: a 1000x1000 photo-like JPEG, quality 90.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

from bench.common import WORK

SOURCES = WORK / "sources"
NAMES = ("camera-12mp.jpg", "alpha-1200.png", "square-1000.jpg")
LABELS = {
    "camera-12mp.jpg": "12 MP camera JPEG (EXIF 6)",
    "alpha-1200.png": "1200x1200 RGBA PNG",
    "square-1000.jpg": "1000x1000 JPEG",
}


def photo(size: tuple[int, int], seed: int, noise: float = 0.15) -> Image.Image:
    """Smooth random colour fields plus uniform grey noise: compresses like a photo."""
    rnd = random.Random(seed)
    small = Image.new("RGB", (64, 48))
    small.putdata(
        [(rnd.randrange(256), rnd.randrange(256), rnd.randrange(256)) for _ in range(64 * 48)]
    )
    im = small.resize(size, Image.Resampling.BICUBIC)
    grain = Image.frombytes("L", size, random.Random(seed + 1).randbytes(size[0] * size[1]))
    grain = grain.point(lambda v: 128 + (v - 128) // 3).convert("RGB")
    return Image.blend(im, grain, noise)


def camera_jpeg(seed: int = 1, size: tuple[int, int] = (4000, 3000)) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "profiled-bench"
    out = io.BytesIO()
    photo(size, seed).save(out, "JPEG", quality=93, exif=exif.tobytes())
    return out.getvalue()


def alpha_png() -> bytes:
    im = photo((1200, 1200), 7, noise=0.08).convert("RGBA")
    mask = Image.new("L", (1200, 1200), 0)
    ImageDraw.Draw(mask).ellipse((100, 100, 1100, 1100), fill=255)
    im.putalpha(mask.filter(ImageFilter.GaussianBlur(40)))
    out = io.BytesIO()
    im.save(out, "PNG")
    return out.getvalue()


def square_jpeg() -> bytes:
    out = io.BytesIO()
    photo((1000, 1000), 3).save(out, "JPEG", quality=90)
    return out.getvalue()


def make_sources() -> dict[str, Path]:
    """Write the sources once (kept in bench/.work/sources) and return their paths."""
    SOURCES.mkdir(parents=True, exist_ok=True)
    makers = {
        "camera-12mp.jpg": camera_jpeg,
        "alpha-1200.png": alpha_png,
        "square-1000.jpg": square_jpeg,
    }
    paths = {}
    for name, make in makers.items():
        path = SOURCES / name
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(make())
            tmp.rename(path)
        paths[name] = path
    return paths


if __name__ == "__main__":
    for name, path in make_sources().items():
        with Image.open(path) as im:
            print(name, im.size, im.mode, path.stat().st_size)
