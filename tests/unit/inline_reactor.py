"""A Clock whose "thread pool" runs calls inline and counts them.

For tests of the local driver that need to see how many thread hops a
call makes, without real threads.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.python.failure import Failure


class InlinePool:
    """Runs each call at once, on the calling thread, and counts it."""

    def __init__(self) -> None:
        self.calls = 0

    def callInThreadWithCallback(self, onResult: Any, f: Any, *a: Any, **kw: Any) -> None:
        self.calls += 1
        try:
            result = f(*a, **kw)
        except BaseException as e:
            onResult(False, Failure(e))
        else:
            onResult(True, result)


class InlineReactor(Clock):
    """Enough of a reactor for the local driver: a clock and an inline pool."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = InlinePool()

    def getThreadPool(self) -> InlinePool:
        return self.pool

    def callFromThread(self, f: Any, *a: Any, **kw: Any) -> None:
        f(*a, **kw)
