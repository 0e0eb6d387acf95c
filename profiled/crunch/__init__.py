"""Image crunching: pure image code, and the process pool that isolates it.

- ``sniff``: magic bytes and header dimensions from the first bytes, in pure
  Python, for the web role to refuse early. No Pillow.
- ``pipeline``: one image file in, its variants out, with Pillow. No Twisted.
- ``child``: the process that runs ``pipeline`` under resource limits.
- ``pool``: the Twisted service that keeps those children and hands them jobs.

Nothing is imported here, so that importing ``sniff`` loads neither Pillow
nor Twisted.
"""
