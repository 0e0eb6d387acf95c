"""The hostile corpus through the pure code: the web role's checks, then real crunch children.

The web side is ``UploadSpool`` (what ``ProfiledRequest`` feeds), the
worker side a real ``CrunchPool`` whose children run under their rlimits,
so a bomb costs a child, never the test process. Every case must get one of
the outcomes its ``Case.expect`` allows; no input, fixed or mutated, may
ever crash a child's code (``failed:crashed``) or take longer than the
crunch time limit.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor

from profiled.crunch.pipeline import CrunchFailed, CrunchSpec
from profiled.crunch.pool import CrunchPool
from profiled.crunch.sniff import ImageLimits
from profiled.web.spool import UploadSpool
from tests.hostile.corpus import (
    BOMB_MEMORY_MB,
    MAX_BYTES,
    NEVER,
    Case,
    corpus,
    mutations,
)

FORMATS = ("jpeg", "png", "gif", "webp", "avif")
LIMITS = ImageLimits()
TIME_LIMIT = 10.0
MiB = 1024 * 1024

CASES = corpus()


def spool_verdict(case: Case, chunks: list[int] | None = None) -> tuple[str, UploadSpool]:
    """Feed ``case`` to an UploadSpool (in chunks of the given sizes); its verdict."""
    spool = UploadSpool(MAX_BYTES, LIMITS, FORMATS, case.content_type)
    data, pos = case.data, 0
    for size in chunks or [len(data) or 1]:
        spool.write(data[pos : pos + size])
        pos += size
        if spool.error is not None:
            break
    if pos < len(data) and spool.error is None:
        spool.write(data[pos:])
    error = spool.finish()
    return ("accepted" if error is None else str(error.code)), spool


def random_chunks(n: int, rng: random.Random) -> list[int]:
    """Chunk sizes adding up to ``n``: single bytes at the start, then anything."""
    sizes = [1] * min(n, rng.randint(0, 64))
    left = n - len(sizes)
    while left > 0:
        size = min(left, rng.choice((1, 2, 7, 31, 512, 4096, 65536)))
        sizes.append(size)
        left -= size
    return sizes


def expected_at_upload(case: Case) -> set[str]:
    """What the web role may say: the refusal codes, or 'accepted' for 202 outcomes."""
    return {e if e[0].isdigit() else "accepted" for e in case.expect}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_web_checks_give_the_expected_answer_in_any_chunking(case: Case):
    """The upload's verdict is the expected one, whether it arrives whole or in random chunks."""
    whole, spool = spool_verdict(case)
    assert whole in expected_at_upload(case), (case.name, whole, spool.error)
    rng = random.Random(case.name)
    for _ in range(3):
        chunked, _ = spool_verdict(case, random_chunks(len(case.data), rng))
        assert chunked == whole, case.name
    if whole == "accepted":
        spool.seek(0)
        assert spool.read() == case.data  # the spooled body is the upload, byte for byte
    spool.close()


async def crunch_all(pool: CrunchPool, cases: list[Case], tmp: Path) -> dict[str, str]:
    """Outcome of each accepted case through the pool: 'ready' or 'failed:<reason>'."""
    outcomes: dict[str, str] = {}
    for i, case in enumerate(cases):
        verdict, spool = spool_verdict(case)
        spool.close()
        if verdict != "accepted":
            outcomes[case.name] = verdict
            continue
        work = tmp / f"{i}"
        (work / "out").mkdir(parents=True)
        (work / "src").write_bytes(case.data)
        started = time.monotonic()
        try:
            result = await pool.crunch(str(work / "src"), str(work / "out"), CrunchSpec())
        except CrunchFailed as e:
            outcomes[case.name] = f"failed:{e.reason}"
        else:
            outcomes[case.name] = "ready"
            for variant in result.variants:
                out = Path(variant.path).read_bytes()
                for needle in case.forbidden:
                    assert needle not in out, (case.name, variant.name, needle)
        assert time.monotonic() - started < TIME_LIMIT + 5, case.name
    return outcomes


def vm_peak_kib(pid: int, field: str = "VmHWM") -> int:
    """A memory figure of a live process from /proc, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


@pytest.fixture
def pool():
    """A started pool of two children with the corpus' memory limit; stopped afterwards."""
    p = CrunchPool(reactor, size=2, memory_limit=BOMB_MEMORY_MB * MiB, time_limit=TIME_LIMIT)
    p.startService()
    yield p
    pytest_twisted.blockon(p.stopService())


@pytest_twisted.ensureDeferred
async def test_corpus_ends_as_expected_in_crunch_children(pool: CrunchPool, tmp_path: Path):
    """Every fixed case gets an allowed outcome, and the children stay within their limits."""
    outcomes = await crunch_all(pool, CASES, tmp_path)
    wrong = {c.name: outcomes[c.name] for c in CASES if outcomes[c.name] not in c.expect}
    assert wrong == {}
    # Each out_of_memory cost exactly one child, replaced; no other child died.
    ooms = sum(1 for o in outcomes.values() if o == "failed:out_of_memory")
    assert ooms >= 2
    assert pool.restarts == ooms
    for child in pool._children:
        assert child.pid is not None
        limits = Path(f"/proc/{child.pid}/limits").read_text()
        assert f"Max address space         {BOMB_MEMORY_MB * MiB}" in limits
        assert vm_peak_kib(child.pid, "VmPeak") <= BOMB_MEMORY_MB * 1024
    assert (await pool.crunch(*_good_job(tmp_path))).variants


def _good_job(tmp: Path) -> tuple[str, str, CrunchSpec]:
    from tests import images

    (tmp / "good" / "out").mkdir(parents=True)
    (tmp / "good" / "src").write_bytes(images.jpeg((300, 200)))
    return str(tmp / "good" / "src"), str(tmp / "good" / "out"), CrunchSpec()


MUTANTS = list(mutations(per_format=120, seed=4))


@pytest_twisted.ensureDeferred
async def test_mutated_files_never_crash_a_child(pool: CrunchPool, tmp_path: Path):
    """Random flips, cuts and splices of every format are refused or crunched, never 'crashed'."""
    outcomes = await crunch_all(pool, MUTANTS, tmp_path)
    bad = {name: o for name, o in outcomes.items() if o in NEVER}
    assert bad == {}
    unexpected = {c.name: outcomes[c.name] for c in MUTANTS if outcomes[c.name] not in c.expect}
    assert unexpected == {}
    # The mutants exercise both sides: some are refused early, some fail late, some decode.
    kinds = {o.split(":")[0] for o in outcomes.values()}
    assert {"415", "failed", "ready"} <= kinds
