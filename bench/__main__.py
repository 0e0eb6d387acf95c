"""Run every benchmark, then write the tables into docs/benchmarks.md.

    .venv/bin/python -m bench [crunch ingest serve e2e e2e_aws]

(``make bench`` installs what is needed first, with bench/install.sh.)
"""

from __future__ import annotations

import importlib
import sys
import time

from bench import common, report

ALL = ("crunch", "ingest", "serve", "e2e", "e2e_aws")


def main() -> None:
    names = sys.argv[1:] or list(ALL)
    for name in names:
        if name not in ALL:
            raise SystemExit(f"unknown benchmark {name!r}; one of {', '.join(ALL)}")
    t0 = time.monotonic()
    for name in names:
        common.say(f"== bench.{name}")
        t = time.monotonic()
        importlib.import_module(f"bench.{name}").main()
        common.say(f"== bench.{name} took {time.monotonic() - t:.0f} s")
    report.main()
    common.say(f"== all done in {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    main()
