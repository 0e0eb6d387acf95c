"""A crunch child process: ``python -m profiled.crunch.child --memory-limit BYTES``.

Decoders are large C libraries fed untrusted bytes, so they run here, in a
process of their own that the pool can kill and replace, and not in the worker.
The child limits itself before it imports Pillow or reads a job: its address
space (a bomb gets ``MemoryError``, not the machine's memory), no core files,
no large files, few file descriptors, no new processes or threads. Then it
answers jobs, one per line on stdin, one JSON line each on stdout:

    -> {"id": 7, "src": "/abs/original", "out": "/abs/dir", "spec": {...}}
    <- {"id": 7, "result": {...}}   or   {"id": 7, "error": "corrupt", "detail": "..."}

File paths travel over the pipe, never image bytes. The first line a child
writes is ``{"ready": <pid>}``. It exits on end of input (the pool's way to
retire it), and after replying ``out_of_memory``, so that the pool replaces a
process whose heap may be left fragmented. Stray output of C libraries is sent
to stderr, which the pool logs, so that stdout carries nothing but replies.

Test hooks: only when ``PROFILED_CRUNCH_TEST_HOOKS=1`` is in its environment
(the pool passes that variable on from its own, and only the tests set it), a
source file starting with ``#profiled-test-hook `` makes the child sleep,
crash, allocate or exit on command, so that the pool's handling of hangs and
crashes can be tested with real processes, and ``PROFILED_CRUNCH_TEST_DELAY``
makes it sleep that many seconds before every job. Without the variable such a file is
just an unsupported upload. It is not a configuration key and nothing in
profiled sets it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import sys
import time
import traceback
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from profiled.crunch.pipeline import CrunchResult, CrunchSpec

#: The environment variable that enables the test hooks (see the module docstring).
TEST_HOOKS_ENV = "PROFILED_CRUNCH_TEST_HOOKS"
TEST_HOOK_MAGIC = b"#profiled-test-hook "
#: With the hooks on: seconds to sleep before every job (a worker "busy" with
#: a real image, for tests that kill a worker mid-job).
TEST_DELAY_ENV = "PROFILED_CRUNCH_TEST_DELAY"

#: Exit statuses the pool understands.
EXIT_OUT_OF_MEMORY = 3
EXIT_PROTOCOL = 4

#: Longest job line accepted (a job is a few hundred bytes).
MAX_LINE = 64 * 1024

#: Largest file a child may write (variants are at most a few hundred KiB).
FILE_SIZE_LIMIT = 64 * 1024 * 1024

#: Open files a child may have: the three pipes, a source, a variant, spares.
OPEN_FILES_LIMIT = 32


def set_limits(memory_limit: int) -> None:
    """Limit this process: memory, core files, file sizes, open files, processes.

    ``RLIMIT_NPROC`` 0 stops fork and thread creation from here on (it is not
    enforced for root, where the other limits still hold). Writing past the
    file size limit fails with EFBIG instead of killing the process with
    SIGXFSZ. The child also asks the kernel to kill it if the pool dies.
    """
    resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))
    resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES_LIMIT, OPEN_FILES_LIMIT))
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    _die_with_parent()


def _die_with_parent() -> None:
    """PR_SET_PDEATHSIG: if the pool is killed, a child stuck in a decoder dies too."""
    if not sys.platform.startswith("linux"):  # pragma: no cover
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - no prctl: EOF on stdin still ends us
        pass


def spec_to_wire(spec: CrunchSpec) -> dict[str, Any]:
    """A ``CrunchSpec`` as JSON-ready data."""
    import attrs

    return attrs.asdict(spec)


def spec_from_wire(data: dict[str, Any]) -> CrunchSpec:
    """The ``CrunchSpec`` that ``spec_to_wire`` gave."""
    from profiled.crunch.pipeline import CrunchSpec
    from profiled.crunch.sniff import ImageLimits

    return CrunchSpec(
        variants=[(str(name), int(box)) for name, box in data["variants"]],
        mode=data["mode"],
        jpeg_quality=int(data["jpeg_quality"]),
        limits=ImageLimits(**{k: int(v) for k, v in data["limits"].items()}),
        formats=tuple(data["formats"]),
    )


def result_to_wire(result: CrunchResult) -> dict[str, Any]:
    """A ``CrunchResult`` as JSON-ready data."""
    import attrs

    return attrs.asdict(result)


def result_from_wire(data: dict[str, Any]) -> CrunchResult:
    """The ``CrunchResult`` that ``result_to_wire`` gave."""
    from profiled.crunch.pipeline import CrunchResult, VariantFile

    return CrunchResult(
        source_format=data["source_format"],
        width=data["width"],
        height=data["height"],
        variants=tuple(VariantFile(**v) for v in data["variants"]),
    )


def main(argv: list[str] | None = None) -> int:
    """Run jobs until stdin ends; the exit status tells the pool why it stopped."""
    parser = argparse.ArgumentParser(prog="python -m profiled.crunch.child")
    parser.add_argument("--memory-limit", type=int, required=True, help="RLIMIT_AS in bytes")
    args = parser.parse_args(argv)
    set_limits(args.memory_limit)
    # Replies get their own copy of stdout; fd 1 becomes stderr, for stray prints.
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    from profiled.crunch import pipeline

    hooks = os.environ.get(TEST_HOOKS_ENV) == "1"
    configured = None
    _send(replies, {"ready": os.getpid()})
    stdin = sys.stdin.buffer
    while True:
        line = stdin.readline(MAX_LINE + 1)
        if not line:
            return 0
        try:
            if not line.endswith(b"\n"):
                raise ValueError("job line too long")
            job = json.loads(line)
            job_id = int(job["id"])
            src, out = str(job["src"]), str(job["out"])
            spec = spec_from_wire(job["spec"])
        except (ValueError, KeyError, TypeError) as e:
            print(f"crunch child: bad job line ({e})", file=sys.stderr)
            return EXIT_PROTOCOL
        if spec.limits != configured:
            pipeline.configure_pillow(spec.limits)
            configured = spec.limits
        reply: dict[str, Any]
        try:
            if hooks:
                time.sleep(float(os.environ.get(TEST_DELAY_ENV, "0") or 0))
                _test_hook(src)
            result = pipeline.crunch(src, out, spec)
            reply = {"id": job_id, "result": result_to_wire(result)}
        except pipeline.CrunchFailed as e:
            reply = {"id": job_id, "error": e.reason, "detail": e.detail}
            if e.reason == "crashed" and e.__cause__ is not None:
                traceback.print_exception(e.__cause__, file=sys.stderr)
        except MemoryError:
            reply = {"id": job_id, "error": "out_of_memory", "detail": "ran out of memory"}
        _send(replies, reply)
        if reply.get("error") == "out_of_memory":
            return EXIT_OUT_OF_MEMORY


def _send(out: IO[bytes], message: dict[str, Any]) -> None:
    out.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
    out.flush()


def _test_hook(src: str) -> None:
    """Obey a test hook file (only reachable with the test variable set)."""
    try:
        with open(src, "rb") as f:
            head = f.read(200)
    except OSError:
        return
    if not head.startswith(TEST_HOOK_MAGIC):
        return
    command, _, arg = head[len(TEST_HOOK_MAGIC) :].decode().strip().partition(" ")
    if command == "sleep":
        time.sleep(float(arg))
    elif command == "signal":
        os.kill(os.getpid(), getattr(signal, arg))
        time.sleep(10)  # a signal that does not kill at once must not look like a reply
    elif command == "alloc":
        bytearray(int(arg))
    elif command == "exit":
        os._exit(int(arg))
    elif command == "stderr":
        print(arg, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
