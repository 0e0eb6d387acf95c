"""twistd's entry: ``twistd -n profiled [options]``."""

from __future__ import annotations

import os
from typing import Any

from twisted.application.service import IService
from twisted.python import usage

from profiled.config import ROLES, Settings, load_settings
from profiled.errors import ConfigError


class Options(usage.Options):
    """Command-line options; they win over the environment and the file."""

    synopsis = "[--role web|worker|proxy|all] [--config FILE] [--listen ENDPOINT] ..."
    optParameters = [
        ["role", None, "all", f"Which role(s) to run: {', '.join(ROLES)}."],
        ["config", "c", None, "A TOML configuration file."],
        ["listen", "l", None, "Endpoint of the HTTP listener, e.g. tcp:8080:interface=127.0.0.1."],
        ["driver", None, None, "Store and queue driver: local or aws."],
        ["data-dir", None, None, "Root directory of the local driver (default ./var)."],
    ]

    settings: Settings

    def postOptions(self) -> None:
        role = self["role"]
        overrides: dict[str, Any] = {}
        if self["driver"] is not None:
            overrides["driver.name"] = self["driver"]
        if self["data-dir"] is not None:
            overrides["local.data_dir"] = self["data-dir"]
        if self["listen"] is not None:
            listener_role = "web" if role == "all" else role
            overrides[f"{listener_role}.listen"] = self["listen"]
        try:
            self.settings = load_settings(self["config"], os.environ, overrides, role=role)
        except ConfigError as e:
            raise usage.UsageError(str(e)) from e


def makeService(options: Options) -> IService:
    from twisted.internet import reactor

    from profiled.service import make_service

    try:
        return make_service(options.settings, reactor)
    except ConfigError as e:
        raise SystemExit(f"profiled: configuration error: {e}") from e
