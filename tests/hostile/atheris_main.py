"""atheris entry point: instrument the parsers, then fuzz ``fuzz_target.check``.

``python -m tests.hostile.atheris_main -runs=N [libFuzzer options] [corpus dirs]``
"""

import sys

import atheris

# Coverage feedback from the code under test only: instrumenting everything
# that is loaded takes a minute and makes the run slower, not better.
with atheris.instrument_imports(include=["profiled.crunch.sniff", "profiled.web.spool"]):
    import profiled.crunch.sniff
    import profiled.web.spool  # noqa: F401

from tests.hostile import fuzz_target

if __name__ == "__main__":
    atheris.Setup(sys.argv, fuzz_target.check)
    atheris.Fuzz()
