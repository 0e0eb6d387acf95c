"""Store key rules, shared by every driver so that all accept the same keys."""

from profiled.errors import InvalidKey

MAX_KEY_BYTES = 200


def check_key(key: str) -> str:
    """Return ``key`` when every driver can store it, else raise InvalidKey.

    Keys are 1-200 UTF-8 bytes with no control characters or backslashes,
    made of ``/``-separated segments none of which is empty, ``.`` or ``..``.
    Spaces, ``+``, ``~`` and non-ASCII letters are allowed.
    """
    if not isinstance(key, str) or not key:
        raise InvalidKey("empty key")
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidKey("key is not valid UTF-8") from e
    if len(encoded) > MAX_KEY_BYTES:
        raise InvalidKey(f"key longer than {MAX_KEY_BYTES} bytes")
    if any(ord(c) < 32 or ord(c) == 127 or c == "\\" for c in key):
        raise InvalidKey("key has a control character or backslash")
    if any(seg in ("", ".", "..") for seg in key.split("/")):
        raise InvalidKey("key has an empty, '.' or '..' segment")
    return key
