"""Driver factories for the contract suites.

Each factory makes a fresh, empty store or queue. A driver joins the
contract by adding a factory here; every test in test_store_contract.py and
test_queue_contract.py then runs against it.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import reactor

from profiled.drivers.memory import MemoryQueue, MemoryStore
from profiled.interfaces import IQueue, IStore
from tests.contract import aws_factories

StoreFactory = Callable[[], Awaitable[IStore]]
QueueFactory = Callable[[int, int], Awaitable[IQueue]]

_counter = itertools.count()


def _memory_store(tmp_path: Path) -> StoreFactory:
    async def make() -> IStore:
        return MemoryStore()

    return make


def _local_store(tmp_path: Path, cache_bytes: int = 0) -> StoreFactory:
    async def make() -> IStore:
        from profiled.drivers.local.store import LocalStore

        root = tmp_path / f"store{next(_counter)}"
        return LocalStore(root, reactor=reactor, cache_bytes=cache_bytes)

    return make


def _local_cached_store(tmp_path: Path) -> StoreFactory:
    """The local store with its read cache on, as the proxy's public store runs."""
    return _local_store(tmp_path, cache_bytes=1024 * 1024)


def _memory_queue(tmp_path: Path) -> QueueFactory:
    async def make(visibility_timeout: int, max_receives: int) -> IQueue:
        return MemoryQueue(reactor, visibility_timeout, max_receives)

    return make


def _local_queue(tmp_path: Path) -> QueueFactory:
    async def make(visibility_timeout: int, max_receives: int) -> IQueue:
        from profiled.drivers.local.queue import LocalQueue

        return LocalQueue(
            tmp_path / f"queue{next(_counter)}",
            reactor=reactor,
            visibility_timeout=visibility_timeout,
            max_receives=max_receives,
        )

    return make


STORE_FACTORIES: dict[str, Callable[..., StoreFactory]] = {
    "memory": _memory_store,
    "local": _local_store,
    "local-cached": _local_cached_store,
    "s3-moto": aws_factories.s3_store,
    "s3-seaweedfs": aws_factories.s3_store,
}
QUEUE_FACTORIES: dict[str, Callable[..., QueueFactory]] = {
    "memory": _memory_queue,
    "local": _local_queue,
    "sqs-moto": aws_factories.sqs_queue,
}
#: Drivers whose factory also takes a session server (tests/aws_servers.py),
#: by the name of its fixture; their tests are marked ``aws``.
SERVERS = {"s3-moto": "moto_server", "s3-seaweedfs": "seaweedfs_server", "sqs-moto": "moto_server"}


def _params(names: dict[str, object]) -> list[object]:
    return [pytest.param(n, marks=pytest.mark.aws) if n in SERVERS else n for n in sorted(names)]


def _factory(
    registry: dict[str, Callable[..., object]], request: pytest.FixtureRequest, tmp_path: Path
) -> Any:
    make = registry[request.param]
    if request.param in SERVERS:
        return make(tmp_path, request.getfixturevalue(SERVERS[request.param]))
    return make(tmp_path)


@pytest.fixture(params=_params(STORE_FACTORIES))
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """A factory of fresh stores of each driver in turn."""
    return _factory(STORE_FACTORIES, request, tmp_path)


@pytest.fixture(params=_params(QUEUE_FACTORIES))
def make_queue(request: pytest.FixtureRequest, tmp_path: Path) -> QueueFactory:
    """A factory of fresh queues of each driver in turn."""
    return _factory(QUEUE_FACTORIES, request, tmp_path)
