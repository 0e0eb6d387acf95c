"""The package tests change the machine (apt-get, a system user): only on request.

`make test-deb` sets PROFILED_TEST_DEB=1; in a plain `make test` they are
collected and skipped, saying how to run them. What they measure (package
size, build, install and upload times) is printed at the end of the run.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

FIGURES = pytest.StashKey[list[str]]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[FIGURES] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    wanted = os.environ.get("PROFILED_TEST_DEB") == "1"
    for item in items:
        if "/deb/" in str(item.fspath):
            item.add_marker(pytest.mark.deb)
            if not wanted:
                item.add_marker(
                    pytest.mark.skip(reason="installs the Debian package as root: make test-deb")
                )


@pytest.fixture(scope="session")
def figure(pytestconfig: pytest.Config) -> Callable[[str], None]:
    """Record one measured figure for the closing summary."""
    return pytestconfig.stash[FIGURES].append


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:  # type: ignore[no-untyped-def]
    figures = config.stash.get(FIGURES, [])
    if figures:
        terminalreporter.section("Debian package figures")
        for line in figures:
            terminalreporter.write_line(line)
