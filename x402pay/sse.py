"""An incremental SSE tap: finds vendor receipt and error frames in a stream without buffering the stream.

Bytes go out as soon as they come in, except the first line of a frame that starts with ``event:`` (held until
its end, to learn the event's name) and whole vendor frames (``compose.receipt``, ``receipt``, ``compose.error``,
``error``), which are captured and, by default, removed, so that standard SSE parsers (the OpenAI SDK's) see only
their own frames. Frames split anywhere across network chunks parse the same. Pure: no I/O.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

from x402pay.protocol.codec import check_depth

RECEIPT_EVENTS: Final = frozenset({"compose.receipt", "receipt"})
ERROR_EVENTS: Final = frozenset({"compose.error", "error"})
_VENDOR_EVENTS: Final = RECEIPT_EVENTS | ERROR_EVENTS
_EVENT: Final = b"event:"
#: A vendor frame larger than this is not one: it is passed through unparsed.
MAX_FRAME_BYTES: Final = 256 * 1024
_MAX_FIRST_LINE: Final = 1024
# A line terminator (CR LF, LF, or a CR not starting a CR LF) followed by another: the end of a frame.
_FRAME_END: Final = re.compile(rb"(?:\r\n|\n|\r(?!\n))(?:\r\n|\n|\r)")
# A frame end after which the next frame begins with "e" (or might: the data ends there).
_FRAME_END_BEFORE_E: Final = re.compile(rb"(?:\r\n|\n|\r(?!\n))(?:\r\n|\n|\r)(?=e|\Z)")
_LINE_END: Final = re.compile(rb"\r\n|\n|\r")
_TERMINATORS: Final = b"\r\n"


class _Mode(Enum):
    FRAME_START = "frame start"
    THROUGH = "through"
    FIRST_LINE = "first line"
    VENDOR = "vendor"


@dataclass(frozen=True)
class VendorFrame:
    """A captured frame: its event name, its data decoded as JSON (None if it was not JSON), the raw bytes."""

    event: str
    data: Any
    raw: bytes


class SSETap:
    """Feed it the stream's bytes; it returns what may go out now and collects vendor frames in `frames`.

    With ``keep_frames=True`` the vendor frames also go out (after being captured).
    """

    def __init__(self, *, keep_frames: bool = False) -> None:
        self.keep_frames = keep_frames
        self.frames: list[VendorFrame] = []
        self.oversized = False
        self._mode = _Mode.FRAME_START
        self._held = b""
        self._tail = b""

    def feed(self, chunk: bytes) -> bytes:
        """Take `chunk` of the stream; return the bytes that may go to the caller now."""
        out: list[bytes] = []
        data = chunk
        while data:
            data = self._step(data, out)
        return b"".join(out)

    def finish(self) -> bytes:
        """The stream ended: what was held goes out; an unterminated vendor frame is captured (kept if asked)."""
        held, self._held = self._held, b""
        if self._mode is _Mode.VENDOR:
            self._capture(held)  # a final frame without its blank line still counts
            return held if self.keep_frames else b""
        return held

    def _step(self, data: bytes, out: list[bytes]) -> bytes:
        if self._mode is _Mode.THROUGH:
            return self._pass(data, out)
        if self._mode is _Mode.FRAME_START:
            return self._frame_start(data, out)
        self._held += data
        return self._first_line(out) if self._mode is _Mode.FIRST_LINE else self._vendor(out)

    def _pass(self, data: bytes, out: list[bytes]) -> bytes:
        combined = self._tail + data
        # A frame starting with "e" follows a terminator; without one inside, only the last bytes can hold a frame
        # end (one whose next frame starts in a later chunk), so the regex need not scan the whole chunk.
        inside = b"\ne" in combined or b"\re" in combined
        match = _FRAME_END_BEFORE_E.search(combined, 0 if inside else max(0, len(combined) - 4))
        if match is None:
            out.append(data)
            self._tail = combined[-2:]
            return b""
        cut = max(match.end() - len(self._tail), 0)
        out.append(data[:cut])
        self._mode, self._tail = _Mode.FRAME_START, b""
        return data[cut:]

    def _frame_start(self, data: bytes, out: list[bytes]) -> bytes:
        blank = len(data) - len(data.lstrip(_TERMINATORS))
        if blank:
            out.append(data[:blank])
            data = data[blank:]
        if not data:
            return b""
        self._mode = _Mode.FIRST_LINE if _EVENT.startswith(data[:6]) else _Mode.THROUGH
        if self._mode is _Mode.THROUGH:
            return data
        self._held = b""
        return data

    def _first_line(self, out: list[bytes]) -> bytes:
        held = self._held
        line_end = _LINE_END.search(held)
        if not _EVENT.startswith(held[:6]) or (line_end is None and len(held) > _MAX_FIRST_LINE):
            return self._release(out)
        if line_end is None:
            return b""
        name = held[len(_EVENT) : line_end.start()].strip().decode("utf-8", "replace")
        if name not in _VENDOR_EVENTS:
            return self._release(out)
        self._mode = _Mode.VENDOR
        self._held = b""
        return held

    def _vendor(self, out: list[bytes]) -> bytes:
        held = self._held
        end = _FRAME_END.search(held)
        if end is not None and end.end() == len(held) and held.endswith(b"\r"):
            end = None  # the CR may be the first half of a CR LF still on its way
        if end is None:
            if len(held) > MAX_FRAME_BYTES:
                self.oversized = True
                return self._release(out)
            return b""
        if end.end() > MAX_FRAME_BYTES:
            self.oversized = True
            return self._release(out)
        frame, rest = held[: end.end()], held[end.end() :]
        self._capture(frame)
        if self.keep_frames:
            out.append(frame)
        self._mode, self._held = _Mode.FRAME_START, b""
        return rest

    def _release(self, out: list[bytes]) -> bytes:
        """Give up holding: what was held is ordinary stream data after all."""
        held, self._held = self._held, b""
        self._mode, self._tail = _Mode.THROUGH, b""
        return held

    def _capture(self, frame: bytes) -> None:
        event, lines = "", []
        for line in _LINE_END.split(frame):
            name, _, value = line.partition(b":")
            value = value[1:] if value.startswith(b" ") else value
            if name == b"event":
                event = value.decode("utf-8", "replace").strip()
            elif name == b"data":
                lines.append(value)
        self.frames.append(VendorFrame(event, _json_or_none(b"\n".join(lines)), frame))


def _json_or_none(data: bytes) -> Any:
    try:
        check_depth(data)
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
