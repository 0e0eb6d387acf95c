"""Image ids: 128 random bits, written as 32 lowercase hex digits.

The id is the only name an image has anywhere (store keys, queue messages,
URLs), so it must be unguessable and must never be parsed loosely.
"""

import re
import secrets

_ID = re.compile(r"[0-9a-f]{32}")


def new_id() -> str:
    """Return a fresh image id from the operating system's CSPRNG."""
    return secrets.token_hex(16)


def is_valid_id(value: str) -> bool:
    """True when ``value`` is exactly an id: no prefix, suffix or upper case."""
    return _ID.fullmatch(value) is not None
