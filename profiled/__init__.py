"""profiled: an avatar image service on Twisted."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("profiled")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
