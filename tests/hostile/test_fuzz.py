"""Fuzzing the code that sees untrusted bytes first: sniffing, header parsing, UploadSpool.

hypothesis drives the shared target (``fuzz_target.check``) with random
bodies and chunkings; atheris, a coverage-guided fuzzer, runs the same
target for a bounded number of runs in a subprocess. Every input that ever
broke a property is kept in ``regressions/`` and replayed here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from profiled.crunch.sniff import HEADER_BYTES_MAX, ImageLimits
from profiled.web.spool import UploadSpool
from tests import images
from tests.hostile import fuzz_target
from tests.hostile.corpus import corpus

HERE = Path(__file__).parent
REPO = HERE.parents[1]
REGRESSIONS = sorted((HERE / "regressions").glob("*.bin"))
SEEDS = [c.data[:2048] for c in corpus() if len(c.data) < 4096]


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_random_inputs_keep_every_property(data: bytes):
    """Random bytes behind each signature: only refusals or acceptance, the same in any chunking."""
    fuzz_target.check(data)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(SEEDS),
    st.lists(st.tuples(st.integers(0, 4095), st.integers(0, 255)), max_size=8),
    st.integers(0, 2**16 - 1),
    st.sampled_from(fuzz_target.TYPES),
)
def test_mutated_corpus_keeps_every_property(
    seed: bytes, flips: list[tuple[int, int]], chunk_seed: int, content_type: str
):
    """Corpus files with bytes changed keep every property of the fuzz target."""
    body = bytearray(seed)
    for at, value in flips:
        if body:
            body[at % len(body)] = value
    # A hint that is a multiple of len(PREFIXES) puts no prefix before the body.
    hint = len(fuzz_target.PREFIXES) * fuzz_target.TYPES.index(content_type)
    fuzz_target.check(bytes([hint]) + chunk_seed.to_bytes(2, "big") + bytes(body))


@pytest.mark.parametrize("path", REGRESSIONS, ids=[p.name for p in REGRESSIONS])
def test_regressions_stay_fixed(path: Path):
    """Every input that once broke a property keeps every property now."""
    fuzz_target.check(path.read_bytes())


def test_regression_cases_exist():
    """The regression directory holds the cases the fuzzers found (see docs/security.md)."""
    assert REGRESSIONS, "tests/hostile/regressions/ is empty"


@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_header_trickled_in_tiny_chunks_costs_linear_time(chunk: int):
    """A 240 KB JPEG header of 60,000 empty segments, sent in tiny chunks, is checked quickly."""
    data = b"\xff\xd8" + b"\xff\xe1\x00\x02" * 60_000 + images.jpeg((16, 16))[2:]
    assert len(data) < HEADER_BYTES_MAX
    spool = UploadSpool(10 * 1024 * 1024, ImageLimits(), ("jpeg",), "image/jpeg")
    started = time.process_time()
    for i in range(0, len(data), chunk):
        spool.write(data[i : i + chunk])
    assert spool.finish() is None
    # Re-parsing the head for every chunk took minutes here; once per doubling, well under 1 s.
    assert time.process_time() - started < 3.0
    spool.close()


def test_atheris_finds_nothing(tmp_path: Path):
    """A bounded coverage-guided atheris run over the target finds no crash."""
    pytest.importorskip("atheris", reason="atheris is in the test extra")
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    for i, data in enumerate(SEEDS):
        (seeds / f"{i}").write_bytes(b"\x00\x00\x01" + data)
    for path in REGRESSIONS:
        (seeds / path.name).write_bytes(path.read_bytes())
    runs = os.environ.get("PROFILED_FUZZ_RUNS", "30000")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.hostile.atheris_main",
            f"-runs={runs}",
            "-max_len=4096",
            "-seed=1",
            "-timeout=10",
            f"-artifact_prefix={tmp_path}/",
            str(seeds),
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=240,
    )
    found = sorted(tmp_path.glob("crash-*")) + sorted(tmp_path.glob("timeout-*"))
    assert done.returncode == 0 and not found, (
        f"atheris found {[p.name for p in found]}; copy them to tests/hostile/regressions/"
        f"*.bin\n{done.stderr[-3000:]}"
    )
    assert "Done" in done.stderr
