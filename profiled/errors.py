"""Exceptions shared by the seams and the roles."""


class ProfiledError(Exception):
    """Base of every exception profiled raises on purpose."""


class InvalidKey(ProfiledError, ValueError):
    """A store key that is empty, too long, or has forbidden characters."""


class NotFound(ProfiledError, KeyError):
    """The object asked for does not exist."""


class Unavailable(ProfiledError):
    """A store or queue could not be reached or answered with a server error.

    Transient by nature: the caller may retry later.
    """


class LostClaim(ProfiledError):
    """A queue delivery whose visibility ran out: someone else may have it."""


class ConfigError(ProfiledError, ValueError):
    """A configuration value that is missing, malformed or out of range.

    The message always starts with the key (``section.key``).
    """
