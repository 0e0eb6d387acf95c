"""Logs: one JSON object per line on stdout, in mozlog's shape.

Bridges twisted.logger: every event becomes
``{"Timestamp", "Type", "Logger", "Hostname", "EnvVersion", "Severity",
"Pid", "Fields"}``. Fields carry the formatted message and the event's own
keys, but only plain values (str, int, float, bool, None): bytes, objects
and anything else are left out, so image data can never reach a log line.
Keys that name secrets are dropped whatever their value.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import IO, Any

from twisted.logger import ILogObserver, LogLevel, formatEvent
from zope.interface import implementer

SEVERITY = {
    LogLevel.debug: 7,
    LogLevel.info: 6,
    LogLevel.warn: 4,
    LogLevel.error: 3,
    LogLevel.critical: 2,
}
LEVELS = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warn": LogLevel.warn,
    "error": LogLevel.error,
}
SECRET_WORDS = ("token", "secret", "password", "authorization", "credential", "cookie")
_PLAIN = (str, int, float, bool, type(None))


@implementer(ILogObserver)
class MozlogObserver:
    """Writes each event at or above ``level`` as one JSON line."""

    def __init__(
        self, stream: IO[str], level: LogLevel = LogLevel.info, logger: str = "profiled"
    ) -> None:
        self.stream = stream
        self.level = level
        self.logger = logger
        self.hostname = socket.gethostname()
        self.pid = os.getpid()

    def __call__(self, event: dict[str, Any]) -> None:
        level = event.get("log_level", LogLevel.info)
        if level < self.level:
            return
        self.stream.write(json.dumps(self.record(event), separators=(",", ":")) + "\n")
        self.stream.flush()

    def record(self, event: dict[str, Any]) -> dict[str, Any]:
        """The mozlog object for one event."""
        fields: dict[str, Any] = {}
        message = formatEvent(event) if event.get("log_format") is not None else None
        if message is None and "message" in event:  # legacy twisted.python.log events
            message = " ".join(str(m) for m in event["message"])
        if message:
            fields["msg"] = message
        for key, value in event.items():
            if key.startswith(("log_", "_")) or key in (
                "message",
                "format",
                "time",
                "system",
                "isError",
                "printed",
            ):
                continue
            if any(word in key.lower() for word in SECRET_WORDS):
                continue
            if isinstance(value, _PLAIN):
                fields[key] = value
        failure = event.get("log_failure")
        if failure is not None:
            fields["error"] = failure.getErrorMessage()
            fields["traceback"] = failure.getTraceback()
        level = event.get("log_level", LogLevel.info)
        return {
            "Timestamp": int(event.get("log_time", time.time()) * 1e9),
            "Type": event.get("log_namespace", "log"),
            "Logger": self.logger,
            "Hostname": self.hostname,
            "EnvVersion": "2.0",
            "Severity": SEVERITY.get(level, 6),
            "Pid": self.pid,
            "Fields": fields,
        }
