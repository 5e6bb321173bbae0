"""An incremental SSE tap: finds vendor receipt and error frames in a stream without buffering the stream.

Bytes go out as soon as they come in, except the first line of a frame that starts with ``event:`` (held until
its end, to learn the event's name) and whole vendor frames (``compose.receipt``, ``receipt``, ``compose.error``),
which are captured and, by default, removed, so that standard SSE parsers (the OpenAI SDK's) see only their own
frames; every other event, a bare ``error`` of Anthropic's or OpenAI's included, passes through byte for byte.
Frames split anywhere across network chunks parse the same. Pure: no I/O.

The common chunk holds no vendor frame and goes out as it came, without Python work per line or per frame: a
vendor frame starts with ``event:`` right after a blank line, so only places where ``event:`` occurs (found at
memory speed, see `_find_event`) and a chunk's last few bytes (a blank line and the start of ``event:`` cut off
by the chunk's end) are looked at; the state machine runs only from such a place to the end of its frame.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Final, Literal

from x402pay._protocol.codec import check_depth

RECEIPT_EVENTS: Final = frozenset({"compose.receipt", "receipt"})
#: The paid API's own error event. A bare ``error`` is not ours: Anthropic's and OpenAI's streams send one for their
#: own failures, and it passes through to their SDKs untouched.
ERROR_EVENTS: Final = frozenset({"compose.error"})
_VENDOR_EVENTS: Final = RECEIPT_EVENTS | ERROR_EVENTS
_EVENT: Final = b"event:"
#: A vendor frame larger than this is not one: it is passed through unparsed.
MAX_FRAME_BYTES: Final = 256 * 1024
#: A first line longer than this (terminator not counted) does not name a vendor event.
MAX_FIRST_LINE: Final = 1024
# A line terminator (CR LF, LF, or a CR not starting a CR LF) followed by another: the end of a frame.
_FRAME_END: Final = re.compile(rb"(?:\r\n|\n|\r(?!\n))(?:\r\n|\n|\r)")
# A frame end and then as much of "event:" as fits before the end of the data: a vendor frame may start there.
_OPEN_FRAME: Final = re.compile(rb"(?:\r\n|\n|\r(?!\n))(?:\r\n|\n|\r)(event|even|eve|ev|e|)\Z")
_OPEN_FRAME_BYTES: Final = len(b"\r\n\r\nevent")
# The blank lines that can end the bytes before a frame start, judged from its last three bytes.
_BLANK_ENDINGS: Final = (b"\n\n", b"\r\r", b"\n\r")
_LOOK_BACK: Final = 3
_LINE_END: Final = re.compile(rb"\r\n|\n|\r")
_TERMINATORS: Final = b"\r\n"
_RECEIPT: Final = b"receipt"
_ERROR: Final = b"error"
_RARE: Final = b"v"
_RARE_PROBES: Final = 8


# Plain strings, not an Enum: reading an Enum member costs as much as the whole check of an ordinary chunk.
_Mode = Literal["frame start", "through", "first line", "vendor"]


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
        self._mode: _Mode = "frame start"
        self._held = bytearray()
        self._scanned = 0  # how far into `_held` no frame end can start any more
        self._tail = b""  # the last bytes let through, to judge whether a frame starts right after them

    def feed(self, chunk: bytes) -> bytes:
        """Take `chunk` of the stream; return the bytes that may go to the caller now."""
        if self._mode == "through" and self._ordinary(chunk):
            return chunk
        out: list[bytes] = []
        data = chunk
        while data:
            data = self._step(data, out)
        return b"".join(out)

    def finish(self) -> bytes:
        """The stream ended: what was held goes out; an unterminated vendor frame is captured (kept if asked)."""
        held, self._held = bytes(self._held), bytearray()
        if self._mode == "vendor":
            self._capture(held)  # a final frame without its blank line still counts
            return held if self.keep_frames else b""
        return held

    def _step(self, data: bytes, out: list[bytes]) -> bytes:
        if self._mode == "through":
            return self._pass(data, out)
        if self._mode == "frame start":
            return self._frame_start(data, out)
        self._held += data
        return self._first_line(out) if self._mode == "first line" else self._vendor(out)

    def _ordinary(self, data: bytes) -> bool:
        """Whether no vendor frame can start inside `data` or right after it: then it all goes out as it came."""
        if (_RARE in data and self._frame_event(data) >= 0) or self._open_frame(data) >= 0:
            return False
        self._tail = data[-_LOOK_BACK:] if len(data) >= _LOOK_BACK else (self._tail + data)[-_LOOK_BACK:]
        return True

    def _pass(self, data: bytes, out: list[bytes]) -> bytes:
        """Inside ordinary frames: all goes out up to the first place where a vendor frame may start."""
        if self._ordinary(data):
            out.append(data)
            return b""
        at = self._frame_event(data)
        if at >= 0:
            out.append(data[:at])
            self._mode = "first line"
            return data[at:]
        cut = self._open_frame(data)
        out.append(data[:cut])
        self._mode = "frame start"
        return data[cut:]

    def _open_frame(self, data: bytes) -> int:
        """Where `data` ends in a frame end and the start of ``event:`` (maybe none of it): that start, or -1."""
        if len(data) > len(b"event") and data.find(b"\n", -6) < 0 and data.find(b"\r", -6) < 0:
            return -1  # the common case, settled without the regex: no line ends among the last bytes
        # Past a short `data` the tail is not next to these last bytes, but no open frame start is longer than they.
        match = _OPEN_FRAME.search(self._tail + data[-_OPEN_FRAME_BYTES:])
        # The start of "event:" lies in `data`, never in the tail: a tail never ends in an open frame start.
        return -1 if match is None else len(data) - len(match.group(1))

    def _frame_event(self, data: bytes) -> int:
        """Where a vendor frame may start in `data`, or -1: an ``event:`` line at a frame start that names a vendor
        event, or that the end of `data` cuts off."""
        if _find_event(data, 0) < 0:
            return -1
        # Some streams begin every frame with "event:". Rather than judge each such line, look only at the lines
        # that hold "receipt" or "error" (as every vendor event's name does) and at the one the end cuts off.
        starts = [self._named_line(data, _RECEIPT), self._named_line(data, _ERROR), self._cut_line(data)]
        return min((start for start in starts if start >= 0), default=-1)

    def _named_line(self, data: bytes, name: bytes) -> int:
        """Where the first line of `data` that holds `name` and may start a vendor frame begins, or -1."""
        at = data.find(name)
        while at >= 0:
            start = _line_start(data, at)
            if self._may_start_vendor_frame(data, start):
                return start
            at = data.find(name, at + 1)
        return -1

    def _cut_line(self, data: bytes) -> int:
        """Where the line that the end of `data` cuts off begins, if it may start a vendor frame; else -1."""
        start = _line_start(data, len(data))
        return start if self._may_start_vendor_frame(data, start) else -1

    def _may_start_vendor_frame(self, data: bytes, start: int) -> bool:
        """Whether an ``event:`` line that may name a vendor event starts a frame at `start` in `data`."""
        return data.startswith(_EVENT, start) and self._starts_frame(data, start) and _may_name_vendor(data, start)

    def _starts_frame(self, data: bytes, at: int) -> bool:
        """Whether a frame starts at `at` in `data`: the bytes before it end in a blank line."""
        before = (self._tail + data[max(0, at - _LOOK_BACK) : at])[-_LOOK_BACK:]
        return before.endswith(_BLANK_ENDINGS) or (len(before) == _LOOK_BACK and not before.strip(_TERMINATORS))

    def _frame_start(self, data: bytes, out: list[bytes]) -> bytes:
        blank = len(data) - len(data.lstrip(_TERMINATORS))
        if blank:
            out.append(data[:blank])
            data = data[blank:]
        if data:
            # The frame's first byte is no terminator, so whether a later "event:" starts a frame is known from
            # the data alone: no tail.
            self._mode = "first line" if _EVENT.startswith(data[:6]) else "through"
            self._tail = b""
        return data

    def _first_line(self, out: list[bytes]) -> bytes:
        held = self._held
        line_end = _LINE_END.search(held, 0, MAX_FIRST_LINE + 1)
        if not _EVENT.startswith(held[:6]) or (line_end is None and len(held) > MAX_FIRST_LINE):
            return self._release(out)
        if line_end is None:
            return b""
        if not _names_vendor_event(held[: line_end.start()]):
            return self._release(out)
        self._mode, self._held, self._scanned = "vendor", bytearray(), 0
        return bytes(held)

    def _vendor(self, out: list[bytes]) -> bytes:
        held = self._held
        end = _FRAME_END.search(held, self._scanned)
        if end is not None and end.end() == len(held) and held.endswith(b"\r"):
            end = None  # the CR may be the first half of a CR LF still on its way
        if end is None:
            self._scanned = max(0, len(held) - len(b"\r\n\r"))  # a frame end needs at most 3 held bytes
            if len(held) > MAX_FRAME_BYTES:
                self.oversized = True
                return self._release(out)
            return b""
        if end.end() > MAX_FRAME_BYTES:
            self.oversized = True
            return self._release(out)
        frame, rest = bytes(held[: end.end()]), bytes(held[end.end() :])
        self._capture(frame)
        if self.keep_frames:
            out.append(frame)
        self._mode, self._held = "frame start", bytearray()
        return rest

    def _release(self, out: list[bytes]) -> bytes:
        """Give up holding: what was held is ordinary stream data after all."""
        held, self._held = bytes(self._held), bytearray()
        # Its first byte ("e") goes out at once and becomes the tail: the "event:" that was held starts no frame.
        out.append(held[:1])
        self._mode, self._tail = "through", held[:1]
        return held[1:]

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


def _may_name_vendor(data: bytes, at: int) -> bool:
    """Whether the ``event:`` line at `at` in `data` names a vendor event, or may once the rest of it arrives."""
    line_end = _LINE_END.search(data, at, at + MAX_FIRST_LINE + 1)
    if line_end is None:
        return len(data) - at <= MAX_FIRST_LINE
    return _names_vendor_event(data[at : line_end.start()])


def _line_start(data: bytes, at: int) -> int:
    """Where the line holding position `at` of `data` begins, looked for no further back than the first line of a
    vendor frame can reach (a line longer than that starts no vendor frame, and a scan back to the start of
    `data` per candidate would be quadratic)."""
    low = max(0, at - MAX_FIRST_LINE - 1)
    return max(data.rfind(b"\n", low, at), data.rfind(b"\r", low, at), low - 1) + 1


def _names_vendor_event(line: bytes | bytearray) -> bool:
    """Whether an ``event:`` line (its terminator left out) names a vendor event."""
    return line[len(_EVENT) :].strip().decode("utf-8", "replace") in _VENDOR_EVENTS


def _find_event(data: bytes, start: int) -> int:
    """Index of the first ``event:`` in `data` at or after `start`, or -1."""
    # A search for one byte runs at memory speed (memchr), one for several walks the bytes one by one. "v", the
    # rarest byte of "event:" in JSON and prose, is looked for first; where it is common, a plain search takes over.
    for _ in range(_RARE_PROBES):
        probe = data.find(_RARE, start + 1)
        if probe < 0:
            return -1
        if data.startswith(_EVENT, probe - 1):
            return probe - 1
        start = probe
    return data.find(_EVENT, start)


def _json_or_none(data: bytes) -> Any:
    try:
        check_depth(data)
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
