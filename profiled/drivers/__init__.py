"""The drivers: implementations of the store and queue seams, by name.

A fixed registry: ``driver.name`` must be one of ``DRIVERS``; anything else
was already refused by the configuration.
"""

from __future__ import annotations

from typing import Any

import attrs

from profiled.config import Settings
from profiled.interfaces import IQueue, IStore

DRIVERS = ("local", "aws")


@attrs.frozen
class Drivers:
    """The two stores and the queue one deployment uses."""

    private: IStore
    public: IStore
    queue: IQueue


def build_drivers(settings: Settings, reactor: Any) -> Drivers:
    """Make the stores and queue that ``settings`` names."""
    name = settings.driver.name
    if name == "local":
        from profiled.drivers.local import build_local

        return build_local(settings, reactor)
    if name == "aws":
        from profiled.drivers.aws import build_aws

        return build_aws(settings, reactor)
    raise ValueError(f"driver.name: unknown driver {name!r}")
