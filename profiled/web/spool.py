"""An upload body, checked while it arrives and spooled to disk.

The web role never holds a body in memory and never decodes an image:
the first bytes are sniffed (magic bytes, then the dimensions in the
header) as soon as they arrive, so a wrong, lying or oversized upload is
refused before the rest of it is even read, and nothing is stored for it.
The accepted bytes go into the private store's own space when it can
adopt them (``IAdoptingStore``: the local store), so they are written once;
otherwise to an anonymous temporary file (gone on close or on a crash), from
which the store's ``put`` reads them.

No Twisted here: this is fed by the request object, one chunk at a time.
"""

from __future__ import annotations

import io
import tempfile
from typing import TYPE_CHECKING, BinaryIO

from profiled.crunch.sniff import (
    FORMATS,
    HEADER_BYTES_MAX,
    SNIFF_BYTES,
    HeaderError,
    HeaderInfo,
    ImageLimits,
    check_limits,
    read_header,
    sniff,
)
from profiled.web import errors
from profiled.web.errors import APIError

if TYPE_CHECKING:  # the seams import Twisted; this module does not need it
    from profiled.interfaces import IAdoptingStore, ISpooledBody

#: Declared types that say nothing about the format: the bytes decide.
NEUTRAL_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream"})
#: Other names clients use for the formats.
TYPE_ALIASES = {"image/jpg": "jpeg", "image/pjpeg": "jpeg", "image/x-png": "png"}

_LIMIT_TEXT = {
    "too_many_pixels": "the image has more pixels than allowed",
    "too_large": "a side of the image is longer than allowed",
    "too_many_frames": "the animation has more frames than allowed",
}


def declared_format(content_type: str | None) -> str | None:
    """The format a Content-Type names: a format name, '' when neutral, None when foreign."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media in NEUTRAL_TYPES:
        return ""
    if media in TYPE_ALIASES:
        return TYPE_ALIASES[media]
    for name, mime in FORMATS.items():
        if media == mime:
            return name
    return None


class UploadSpool:
    """Receives one upload body chunk by chunk.

    ``error`` is set as soon as the body is known to be unacceptable; from
    then on, bytes are counted and dropped.
    """

    def __init__(
        self,
        max_bytes: int,
        limits: ImageLimits,
        formats: tuple[str, ...],
        content_type: str | None = None,
        spool_dir: str | None = None,
        store: IAdoptingStore | None = None,
    ) -> None:
        self.max_bytes = max_bytes
        self.limits = limits
        self.formats = formats
        self.declared = declared_format(content_type)
        self.spool_dir = spool_dir
        self.store = store
        #: The body in the store's space, when ``store`` is given: for its ``adopt``.
        self.spooled: ISpooledBody | None = None
        self.size = 0
        self.format: str | None = None
        self.header: HeaderInfo | None = None
        self.error: APIError | None = None
        self._head = bytearray()
        self._header_done = False
        self._inspected = 0
        self._file: BinaryIO | None = None
        if self.declared is None or (self.declared and self.declared not in formats):
            self.error = errors.unsupported(
                f"Content-Type {content_type!r} is not an accepted image type "
                f"({', '.join(FORMATS[f] for f in formats)})"
            )

    # -- the file-like side twisted.web and the store use ------------------

    def write(self, data: bytes) -> None:
        """Take the next chunk of the body."""
        self.size += len(data)
        if self.error is not None:
            return
        if self.size > self.max_bytes:
            self._fail(errors.too_large(self.max_bytes))
            return
        if not self._header_done:
            room = HEADER_BYTES_MAX - len(self._head)
            if room > 0:
                self._head += data[:room]
            # Parse again only once the head has doubled (or is whole): a header
            # trickled in tiny chunks must not be re-parsed from its start for
            # every chunk, which is quadratic and stalls the reactor.
            if len(self._head) >= min(HEADER_BYTES_MAX, max(SNIFF_BYTES, 2 * self._inspected)):
                self._inspected = len(self._head)
                self._inspect(final=False)
            if self.error is not None:
                return
        try:
            self._sink().write(data)
        except OSError:
            # The disk is full or broken: nothing can be stored, say so now.
            self._fail(errors.unavailable())

    def finish(self) -> APIError | None:
        """The body is complete: give the final verdict (None when accepted)."""
        if self.error is None and self.size == 0:
            self.error = errors.malformed("the body is empty")
        if self.error is None and not self._header_done:
            self._inspect(final=True)
        if self.error is None and self._file is not None:
            self._file.flush()
            self._file.seek(0)
        return self.error

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._body().seek(offset, whence)

    def read(self, size: int = -1) -> bytes:
        return self._body().read(size)

    def tell(self) -> int:
        return self._body().tell()

    def close(self) -> None:
        """Drop the spooled bytes (a no-op for a body the store adopted)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self.spooled is not None:
            self.spooled.discard()

    @property
    def content_type(self) -> str:
        """The type the bytes showed themselves to be."""
        return FORMATS[self.format] if self.format else "application/octet-stream"

    # -- inside --------------------------------------------------------------

    def _sink(self) -> BinaryIO | ISpooledBody:
        """Where accepted bytes go, made on the first of them."""
        if self.store is not None:
            if self.spooled is None:
                self.spooled = self.store.spool()
            return self.spooled
        if self._file is None:
            self._file = tempfile.TemporaryFile(dir=self.spool_dir)
        return self._file

    def _body(self) -> BinaryIO:
        if self._file is None or self.error is not None:
            return io.BytesIO()
        return self._file

    def _fail(self, error: APIError) -> None:
        self.error = error
        self.close()

    def _inspect(self, final: bool) -> None:
        head = bytes(self._head)
        if self.format is None:
            if len(head) < SNIFF_BYTES and not final:
                return
            fmt = sniff(head)
            if fmt is None or fmt not in self.formats:
                self._fail(
                    errors.unsupported(
                        "the body is not an accepted image "
                        f"({', '.join(FORMATS[f] for f in self.formats)})"
                    )
                )
                return
            if self.declared and self.declared != fmt:
                self._fail(
                    errors.unsupported(
                        f"declared as {FORMATS[self.declared]} but the bytes are {FORMATS[fmt]}"
                    )
                )
                return
            self.format = fmt
        try:
            info = read_header(head, self.format)
        except HeaderError as e:
            self._fail(errors.unsupported(f"not a valid {FORMATS[self.format]} file: {e}"))
            return
        if info is None:
            if final and self.size <= HEADER_BYTES_MAX:
                self._fail(errors.unsupported(f"truncated {FORMATS[self.format]} header"))
            elif len(head) >= HEADER_BYTES_MAX:
                self._header_done = True  # dimensions are checked by the worker
            return
        self.header = info
        reason = check_limits(info, self.limits)
        if reason is not None:
            self._fail(
                errors.over_limit(
                    f"{_LIMIT_TEXT.get(reason, reason)} ({info.width}x{info.height}; "
                    f"limits: {self.limits.max_pixels} pixels, {self.limits.max_side} px a side)"
                )
            )
            return
        if info.frames is None and not final and len(head) < HEADER_BYTES_MAX:
            # The frame count (APNG acTL, GIF frames, WebP ANMF) may come with
            # more bytes: the verdict must not depend on where a chunk ends.
            return
        self._header_done = True


class SmallBody(io.BytesIO):
    """The body of any request but an upload: small, in memory, capped."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__()
        self.max_bytes = max_bytes
        self.error: APIError | None = None

    def write(self, data: bytes) -> int:  # type: ignore[override]
        if self.error is not None:
            return len(data)
        if self.tell() + len(data) > self.max_bytes:
            self.error = errors.too_large(self.max_bytes)
            self.truncate(0)
            return len(data)
        return super().write(data)

    def finish(self) -> APIError | None:
        self.seek(0)
        return self.error
