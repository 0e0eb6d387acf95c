"""What-if for crunch: JPEG variants resized as planes, luma at full size, chroma at half.

    .venv/bin/python -m bench.experiments.crunch_planar [ROUNDS]

Pillow's resampler costs in proportion to the bands it resamples, and the
JPEG encoder throws three quarters of the chroma away again (4:2:0). This
prototype decodes to YCbCr (``draft``), splits the bands, resizes Y to the
variant's size and Cb/Cr to half of it (a box reduction first), turns the
planes upright, and merges them for the encoder with the chroma repeated 2x2
(which libjpeg's 4:2:0 downsampling, a 2x2 mean, turns back into exactly the
resized chroma): no colour conversion on either side. It handles only what
the benchmark's JPEG sources need (fit mode, EXIF orientation 1 and 6, no ICC
profile), and prints, for the 1000x1000 and the 12 MP JPEG, the PSNR of each
variant minus naive Pillow's and the CPU time against ``crunch()`` and
libvips' best chain, in interleaved rounds on one core. Nothing here is used
by profiled itself; docs/benchmarks.md has the figures.
"""

from __future__ import annotations

import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("VIPS_CONCURRENCY", "1")

from PIL import Image

from bench import common
from bench import crunch as bc
from bench.sources import make_sources
from profiled.crunch.pipeline import CrunchSpec, configure_pillow, crunch

R = Image.Resampling
BOXES = (("large", 600), ("default", 200), ("small", 100))


def _half(size: tuple[int, int]) -> tuple[int, int]:
    return (size[0] + 1) // 2, (size[1] + 1) // 2


def planar(src: Path) -> dict[str, bytes]:
    """The three variants, resized as a full-size Y plane and half-size chroma."""
    im = Image.open(src)
    width, height = im.size
    target = bc.fit(width, height, BOXES[0][1])
    factor = target[0] / width
    im.draft("YCbCr", (int(width * factor + 0.999), int(height * factor + 0.999)))
    im.load()
    turn = Image.Transpose.ROTATE_270 if im.getexif().get(0x0112, 1) == 6 else None
    y, cb, cr = im.split()
    planes = [
        y.resize(target, R.BICUBIC, reducing_gap=2.0),
        cb.resize(_half(target), R.BICUBIC, reducing_gap=1.0),
        cr.resize(_half(target), R.BICUBIC, reducing_gap=1.0),
    ]
    if turn is not None:
        planes = [p.transpose(turn) for p in planes]
    upright = planes[0].size
    out = {}
    for name, box in BOXES:
        size = bc.fit(*upright, box)
        if planes[0].size != size:
            planes = [
                planes[0].resize(size, R.LANCZOS),
                planes[1].resize(_half(size), R.LANCZOS),
                planes[2].resize(_half(size), R.LANCZOS),
            ]
        chroma = [
            p.resize((p.width * 2, p.height * 2), R.NEAREST).crop((0, 0, *size)) for p in planes[1:]
        ]
        buf = io.BytesIO()
        Image.merge("YCbCr", (planes[0], *chroma)).save(
            buf, "JPEG", quality=bc.QUALITY, progressive=True, subsampling="4:2:0"
        )
        out[name] = buf.getvalue()
    return out


def main() -> None:
    os.sched_setaffinity(0, {0})
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 11
    sources = {k: v for k, v in make_sources().items() if k.endswith(".jpg")}
    spec = CrunchSpec()
    configure_pillow(spec.limits)
    out_dir = tempfile.mkdtemp(prefix="planar-", dir=common.WORK)

    def profiled(src: Path) -> dict[str, bytes]:
        result = crunch(str(src), out_dir, spec)
        return {v.name: Path(v.path).read_bytes() for v in result.variants}

    engines: dict[str, Callable[[Path], dict[str, bytes]]] = {
        "crunch()": profiled,
        "planar": planar,
        "libvips chain": bc.vips_chain,
    }
    cpu: dict[str, dict[str, list[float]]] = {e: {s: [] for s in sources} for e in engines}
    outs: dict[str, dict[str, dict[str, bytes]]] = {e: {} for e in engines}
    for i in range(rounds + 1):  # the first round warms up
        for engine, run in engines.items():
            for name, path in sources.items():
                t0 = time.process_time()
                outs[engine][name] = run(path)
                if i:
                    cpu[engine][name].append((time.process_time() - t0) * 1000)
    for name, path in sources.items():
        ref = bc.reference(path)
        naive = bc.naive_pillow(path)
        print(name)
        for engine in engines:
            o = outs[engine][name]
            delta = " / ".join(
                f"{bc.psnr(o[v], ref) - bc.psnr(naive[v], ref):+.3f}" for v, _ in BOXES
            )
            ms = statistics.median(cpu[engine][name])
            print(f"  {engine:14s} {ms:6.1f} ms CPU   PSNR - naive Pillow's: {delta}")


if __name__ == "__main__":
    main()
