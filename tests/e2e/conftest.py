"""End-to-end tests: real twistd processes, real HTTP on 127.0.0.1."""

import pytest


def pytest_collection_modifyitems(items):  # type: ignore[no-untyped-def]
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)
