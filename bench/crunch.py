"""Crunch: ms per source for all three variants, profiled vs Pillow, libvips, thumbor.

    .venv/bin/python -m bench.crunch

Every engine makes the same three variants (fit in 600, 200 and 100 boxes,
upright, JPEG quality 85 progressive or PNG for real transparency) from the
same files, in interleaved rounds (each round runs every engine on every
source once), on one core: this process is pinned to CPU 0, libvips runs
with one thread (VIPS_CONCURRENCY=1), thumbor runs as a server pinned to
CPU 1 and is timed per image over HTTP from here, nothing subtracted.

Also: peak RSS of a real crunch child per source, output bytes per variant,
and the PSNR of every variant against a lossless full-resolution Lanczos
reference (full decode, EXIF applied, one Lanczos resize, no encoding).
"""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("VIPS_CONCURRENCY", "1")

from PIL import Image, ImageChops, ImageOps, ImageStat

from bench import common
from bench.sources import LABELS, make_sources
from profiled.crunch.pipeline import CrunchSpec, configure_pillow, crunch

BOXES = {"large": 600, "default": 200, "small": 100}
QUALITY = 85
PNG_LEVEL = 3  # what profiled writes; libvips is given the same

Outputs = dict[str, bytes]  # variant name -> encoded bytes


def fit(width: int, height: int, box: int) -> tuple[int, int]:
    if max(width, height) <= box:
        return width, height
    f = box / max(width, height)
    return max(1, round(width * f)), max(1, round(height * f))


# -- engines -------------------------------------------------------------------


def profiled_engine(spec: CrunchSpec) -> Callable[[Path], Outputs]:
    configure_pillow(spec.limits)
    out_dir = tempfile.mkdtemp(prefix="bench-crunch-", dir=common.WORK)

    def run(src: Path) -> Outputs:
        result = crunch(str(src), out_dir, spec)
        return {v.name: Path(v.path).read_bytes() for v in result.variants}

    return run


def _pillow_encode(im: Image.Image, png_level: int = 6) -> bytes:
    out = io.BytesIO()
    if im.mode in ("RGBA", "LA"):
        im.save(out, "PNG", compress_level=png_level)
    else:
        im.save(out, "JPEG", quality=QUALITY, progressive=True, subsampling="4:2:0")
    return out.getvalue()


def naive_pillow(src: Path) -> Outputs:
    """Full decode, EXIF applied, each variant resized from full size (Lanczos)."""
    with Image.open(src) as opened:
        im = ImageOps.exif_transpose(opened)
        if im.mode not in ("RGB", "RGBA"):
            im = im.convert("RGBA" if "A" in im.getbands() else "RGB")
    return {
        name: _pillow_encode(im.resize(fit(*im.size, box), Image.Resampling.LANCZOS))
        for name, box in BOXES.items()
    }


def _vips_save(im: Any, alpha: bool) -> bytes:
    if alpha:
        return bytes(im.write_to_buffer(f".png[compression={PNG_LEVEL},strip]"))
    return bytes(im.write_to_buffer(f".jpg[Q={QUALITY},interlace,strip]"))


def _vips() -> Any:
    import pyvips

    return pyvips


def vips_thumbnail(src: Path) -> Outputs:
    """libvips' thumbnail, once per variant (shrink-on-load, auto-rotate)."""
    pyvips = _vips()
    out = {}
    for name, box in BOXES.items():
        im = pyvips.Image.thumbnail(str(src), box)
        out[name] = _vips_save(im, im.hasalpha())
    return out


def vips_chain(src: Path) -> Outputs:
    """libvips' best chain: thumbnail to 600 once, then resize to 200, then 100."""
    pyvips = _vips()
    big = pyvips.Image.thumbnail(str(src), BOXES["large"]).copy_memory()
    alpha = big.hasalpha()
    out = {"large": _vips_save(big, alpha)}
    previous = big
    for name in ("default", "small"):
        box = BOXES[name]
        scale = box / max(previous.width, previous.height)
        im = previous.resize(scale, kernel="lanczos3").copy_memory()
        out[name] = _vips_save(im, alpha)
        previous = im
    return out


THUMBOR_CONF = """
LOADER = 'thumbor.loaders.file_loader'
FILE_LOADER_ROOT_PATH = {root!r}
STORAGE = 'thumbor.storages.no_storage'
RESULT_STORAGE = None
ALLOW_UNSAFE_URL = True
QUALITY = {quality}
PROGRESSIVE_JPEG = True
RESPECT_ORIENTATION = True
AUTO_WEBP = False
"""


class Thumbor:
    """thumbor 7 as a server on 127.0.0.1, file loader, no storage of any kind."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = common.free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return (common.THUMBOR_VENV / "bin" / "thumbor").exists()

    def version(self) -> str:
        py = common.THUMBOR_VENV / "bin" / "python"
        return common.run(
            [str(py), "-c", "import thumbor, PIL; print(thumbor.__version__, PIL.__version__)"]
        ).strip()

    def __enter__(self) -> Thumbor:
        conf = common.WORK / "thumbor.conf"
        conf.write_text(THUMBOR_CONF.format(root=str(self.root), quality=QUALITY))
        cmd = [
            "taskset", "-c", "1",
            str(common.THUMBOR_VENV / "bin" / "thumbor"),
            "-i", "127.0.0.1", "-p", str(self.port), "-c", str(conf), "-l", "error",
        ]  # fmt: skip
        log = (common.WORK / "thumbor.log").open("ab")
        self.proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        common.wait_http(self.port, "/healthcheck", timeout=60)
        import http.client

        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.close()
        if self.proc is not None:
            common.stop(self.proc)

    def __call__(self, src: Path) -> Outputs:
        out = {}
        for name, box in BOXES.items():
            self.conn.request("GET", f"/unsafe/fit-in/{box}x{box}/{src.name}")
            r = self.conn.getresponse()
            body = r.read()
            if r.status != 200:
                raise RuntimeError(f"thumbor answered {r.status} for {src.name} {box}")
            out[name] = body
        return out


# -- quality -------------------------------------------------------------------


def reference(src: Path) -> Image.Image:
    with Image.open(src) as opened:
        im = ImageOps.exif_transpose(opened)
        return im.convert("RGBA" if "A" in im.getbands() else "RGB")


def _seen(im: Image.Image) -> Image.Image:
    """What a viewer sees: RGB, transparency composited over mid grey.

    (Colours under fully transparent pixels are invisible and differ between
    engines; comparing them would measure nothing.)
    """
    if im.mode != "RGBA":
        return im.convert("RGB")
    grey = Image.new("RGBA", im.size, (128, 128, 128, 255))
    return Image.alpha_composite(grey, im).convert("RGB")


def psnr(data: bytes, ref_full: Image.Image) -> float:
    """PSNR (dB) of an encoded variant against the reference resized to its size."""
    with Image.open(io.BytesIO(data)) as opened:
        out = _seen(opened.convert(ref_full.mode))
    ref = _seen(ref_full.resize(out.size, Image.Resampling.LANCZOS))
    diff = ImageStat.Stat(ImageChops.difference(out, ref))
    n = out.size[0] * out.size[1] * len(diff.sum2)
    mse = sum(diff.sum2) / n
    return float("inf") if mse == 0 else 10 * math.log10(255**2 / mse)


# -- the crunch child's memory --------------------------------------------------


def child_peak_rss(src: Path | None, spec: CrunchSpec, memory_limit: int) -> int:
    """Peak RSS (KiB) of a real crunch child that crunched ``src`` (None: no job)."""
    from profiled.crunch import child as wire

    out_dir = tempfile.mkdtemp(prefix="bench-child-", dir=common.WORK)
    env = {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(common.REPO),
        "PYTHONDONTWRITEBYTECODE": "1",
        "MALLOC_ARENA_MAX": "2",
    }
    args = [sys.executable, "-P", "-X", "faulthandler", "-m", "profiled.crunch.child",
            f"--memory-limit={memory_limit}"]  # fmt: skip
    p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd="/")
    assert p.stdin is not None and p.stdout is not None
    json.loads(p.stdout.readline())  # ready
    if src is not None:
        job = {"id": 1, "src": str(src), "out": out_dir, "spec": wire.spec_to_wire(spec)}
        p.stdin.write(json.dumps(job).encode() + b"\n")
        p.stdin.flush()
        reply = json.loads(p.stdout.readline())
        if "result" not in reply:
            raise RuntimeError(f"crunch child failed: {reply}")
    # VmHWM: the peak since exec (ru_maxrss would count the forked copy of this process).
    peak = 0
    with open(f"/proc/{p.pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                peak = int(line.split()[1])
    p.stdin.close()
    p.wait(30)
    return peak


# -- the run ---------------------------------------------------------------------


def main() -> None:
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {0})
    try:
        _main()
    finally:
        os.sched_setaffinity(0, affinity)


def _main() -> None:
    sources = make_sources()
    spec = CrunchSpec()
    rounds = common.repeats(9, 2)
    engines: dict[str, Callable[[Path], Outputs]] = {
        "profiled": profiled_engine(spec),
        "pillow_naive": naive_pillow,
        "vips_thumbnail": vips_thumbnail,
        "vips_chain": vips_chain,
    }
    versions: dict[str, str] = {}
    import PIL

    pyvips = _vips()
    versions["pillow"] = PIL.__version__
    versions["libvips"] = ".".join(str(pyvips.version(i)) for i in range(3))
    versions["pyvips"] = getattr(pyvips, "__version__", "?")

    thumbor: Thumbor | None = None
    if Thumbor.available():
        thumbor = Thumbor(next(iter(sources.values())).parent)
        versions["thumbor (and its Pillow)"] = thumbor.version()
    else:
        common.say("thumbor is not installed (bench/install.sh): skipping it")

    times: dict[str, dict[str, list[float]]] = {e: {s: [] for s in sources} for e in engines}
    # CPU time of the work itself: this process's (all its threads: libvips
    # has its own) for the in-process engines, the server's (from /proc, 10 ms
    # ticks, so averaged) for thumbor. On a shared, busy machine it moves less
    # than wall-clock time.
    cpu: dict[str, dict[str, list[float]]] = {e: {s: [] for s in sources} for e in engines}
    outputs: dict[str, dict[str, Outputs]] = {e: {} for e in engines}

    def one_round(all_engines: dict[str, Callable[[Path], Outputs]]) -> None:
        for engine, run in all_engines.items():
            server = getattr(run, "proc", None)
            for name, path in sources.items():
                c0 = common.cpu_seconds([server.pid]) if server else time.process_time()
                t0 = time.perf_counter()
                out = run(path)
                times[engine][name].append((time.perf_counter() - t0) * 1000)
                c1 = common.cpu_seconds([server.pid]) if server else time.process_time()
                cpu[engine][name].append((c1 - c0) * 1000)
                outputs[engine][name] = out

    def rounds_with(all_engines: dict[str, Callable[[Path], Outputs]]) -> None:
        one_round(all_engines)  # warm-up, discarded
        for engine in all_engines:
            for name in sources:
                times[engine][name].clear()
                cpu[engine][name].clear()
        for i in range(rounds):
            common.say(f"crunch round {i + 1}/{rounds}")
            one_round(all_engines)

    if thumbor is not None:
        with thumbor:
            times["thumbor"] = {s: [] for s in sources}
            cpu["thumbor"] = {s: [] for s in sources}
            outputs["thumbor"] = {}
            rounds_with({**engines, "thumbor": thumbor})
    else:
        rounds_with(engines)

    common.say("quality (PSNR) and child memory")
    quality: dict[str, dict[str, dict[str, float]]] = {}
    sizes: dict[str, dict[str, dict[str, int]]] = {}
    dims: dict[str, dict[str, dict[str, list[int]]]] = {}
    for name, path in sources.items():
        ref = reference(path)
        for engine in outputs:
            out = outputs[engine][name]
            quality.setdefault(engine, {})[name] = {v: psnr(b, ref) for v, b in out.items()}
            sizes.setdefault(engine, {})[name] = {v: len(b) for v, b in out.items()}
            dims.setdefault(engine, {})[name] = {
                v: list(Image.open(io.BytesIO(b)).size) for v, b in out.items()
            }
    memory_limit = 512 * 1024 * 1024
    child_rss = {"(no job)": child_peak_rss(None, spec, memory_limit)}
    for name, path in sources.items():
        child_rss[name] = child_peak_rss(path, spec, memory_limit)

    common.save(
        "crunch",
        {
            "command": ".venv/bin/python -m bench.crunch",
            "rounds": rounds,
            "versions": versions,
            "sources": {
                n: {"label": LABELS[n], "bytes": p.stat().st_size, "size": list(Image.open(p).size)}
                for n, p in sources.items()
            },
            "ms": {e: {s: common.median(v) for s, v in by.items()} for e, by in times.items()},
            "ms_all": times,
            "cpu_ms": {
                e: {
                    s: (sum(v) / len(v) if e == "thumbor" else common.median(v)) if v else None
                    for s, v in by.items()
                }
                for e, by in cpu.items()
            },
            "psnr": quality,
            "bytes": sizes,
            "dims": dims,
            "child_peak_rss_kib": child_rss,
        },
    )


if __name__ == "__main__":
    main()
