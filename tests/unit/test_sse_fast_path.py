"""The SSE tap's fast path: ordinary chunks pass as they came, and wherever the stream is cut, the tap agrees with a
whole-stream reference parse (vendor frames removed and captured, everything else byte for byte)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from x402pay._sse import MAX_FIRST_LINE, SSETap

VENDOR_NAMES = frozenset({b"compose.receipt", b"receipt", b"compose.error"})
LINE = re.compile(rb"([^\r\n]*)(?:\r\n|\n|\r)?")
ENDINGS = {"lf": b"\n", "crlf": b"\r\n", "cr": b"\r"}

ORDINARY = b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n'
RECEIPT = b'event: compose.receipt\ndata: {"finalAmountWei":"5","txHash":"0xab"}\n\n'
DONE = b"data: [DONE]\n\n"
# Anthropic's streams begin every frame with an event line, none of which is a vendor's.
NAMED = b'event: content_block_delta\ndata: {"type":"content_block_delta","delta":{"text":"an error"}}\n\n'
# JSON that names the vendor event, even after escaped blank lines: text inside a data line, never a frame.
LOOKALIKE = b'data: {"content":"event: compose.receipt\\n\\nevent: compose.receipt"}\n\n'


def lines(stream: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(content, raw bytes) of every line of `stream`; the last one may lack its terminator."""
    position = 0
    while position < len(stream):
        match = LINE.match(stream, position)
        assert match is not None
        yield match.group(1), match.group(0)
        position = match.end()


def names_vendor_event(line: bytes, raw: bytes) -> bool:
    """A terminated first line, not too long, ``event:`` and a vendor name (white space around it allowed)."""
    named = line.startswith(b"event:") and line[6:].strip() in VENDOR_NAMES
    return named and len(line) <= MAX_FIRST_LINE and raw != line


def reference(stream: bytes) -> tuple[bytes, list[bytes]]:
    """The stream without its vendor frames, and their raw bytes, parsed line by line from the whole stream."""
    out, frames = bytearray(), []
    frame: bytearray | None = None
    inside = False
    for content, raw in lines(stream):
        if not inside and content:  # the first line of a frame
            inside = True
            frame = bytearray() if names_vendor_event(content, raw) else None
        (out if frame is None else frame).extend(raw)
        if inside and not content:  # the blank line that ends it
            inside = False
            if frame is not None:
                frames.append(bytes(frame))
            frame = None
    if frame is not None:
        frames.append(bytes(frame))
    return bytes(out), frames


def run(pieces: list[bytes], *, keep_frames: bool = False) -> tuple[bytes, SSETap]:
    tap = SSETap(keep_frames=keep_frames)
    return b"".join(tap.feed(piece) for piece in pieces) + tap.finish(), tap


def with_ending(stream: bytes, ending: str) -> bytes:
    return stream.replace(b"\n", ENDINGS[ending])


def test_the_reference_parse_itself() -> None:
    stream = ORDINARY + RECEIPT + b"\n" + LOOKALIKE + b"id: 1\nevent: receipt\n\n" + DONE
    assert reference(stream) == (ORDINARY + b"\n" + LOOKALIKE + b"id: 1\nevent: receipt\n\n" + DONE, [RECEIPT])


@pytest.mark.parametrize("ending", ENDINGS)
@pytest.mark.parametrize(
    "stream",
    [
        ORDINARY * 3 + RECEIPT + DONE,
        RECEIPT + ORDINARY + DONE,
        ORDINARY + DONE + RECEIPT,
        ORDINARY + RECEIPT[:-1],
        NAMED * 2 + RECEIPT + NAMED,
    ],
    ids=["middle", "start", "end", "end-unterminated", "event-lines-everywhere"],
)
def test_a_cut_at_every_byte_offset(stream: bytes, ending: str) -> None:
    stream = with_ending(stream, ending)
    expected, frames = reference(stream)
    assert len(frames) == 1
    for cut in range(len(stream) + 1):
        out, tap = run([stream[:cut], stream[cut:]])
        assert (out, [frame.raw for frame in tap.frames]) == (expected, frames), cut
        assert tap.frames[0].data == {"finalAmountWei": "5", "txHash": "0xab"}


@pytest.mark.parametrize("ending", ENDINGS)
def test_a_short_piece_at_every_offset_around_the_frame(ending: str) -> None:
    stream = with_ending(ORDINARY + RECEIPT + DONE, ending)
    expected, frames = reference(stream)
    start = len(with_ending(ORDINARY, ending)) - 4
    for cut in range(start, start + len(with_ending(RECEIPT, ending)) + 8):
        for size in (1, 2, 3, 5, 7):
            out, tap = run([stream[:cut], stream[cut : cut + size], stream[cut + size :]])
            assert (out, [frame.raw for frame in tap.frames]) == (expected, frames), (cut, size)


@pytest.mark.parametrize("ending", ENDINGS)
def test_event_text_inside_a_data_line_is_no_frame(ending: str) -> None:
    stream = with_ending(LOOKALIKE + b'data: {"x":"\\r\\n\\r\\nevent: compose.error"}\n\n' + DONE, ending)
    for cut in range(len(stream) + 1):
        out, tap = run([stream[:cut], stream[cut:]])
        assert out == stream
        assert tap.frames == []


def test_ordinary_chunks_come_back_as_the_same_objects() -> None:
    tap = SSETap()
    tap.feed(b"data: ")
    chunks = [b'{"v":"' + b"v" * 5000 + b'"}\n\ndata: 1\n', b"\nid: 2\nevent: compose.receipt\n\n", b"data: x" * 900]
    for chunk in chunks:
        assert tap.feed(chunk) is chunk
    assert tap.frames == []


def test_a_frame_after_many_rare_bytes_is_found() -> None:
    stream = b'data: {"service_tier":"v' + b"v" * 300 + b'"}\n\n' + RECEIPT + DONE
    out, tap = run([stream])
    assert out == stream.replace(RECEIPT, b"")
    assert len(tap.frames) == 1


def test_the_first_line_limit_does_not_depend_on_the_chunking() -> None:
    stream = b"data: 1\n\nevent:" + b" " * MAX_FIRST_LINE + b"compose.receipt\ndata: {}\n\n" + DONE
    for size in (1, 7, 4096, len(stream)):
        out, tap = run([stream[at : at + size] for at in range(0, len(stream), size)])
        assert (out, tap.frames) == (stream, [])


def test_a_first_line_that_never_ends_is_not_held() -> None:
    tap = SSETap()
    tap.feed(b"data: 1\n\n")
    let_through = sum(len(tap.feed(b"event:" + b"x" * 4090)) for _ in range(256))
    assert let_through > 256 * 4096 - 2 * MAX_FIRST_LINE


def test_a_vendor_frame_arriving_byte_by_byte_is_read_in_linear_time() -> None:
    frame = b'event: compose.receipt\ndata: {"pad":"' + b"x" * 100_000 + b'"}\n\n'
    out, tap = run([frame[at : at + 1] for at in range(len(frame))] + [DONE])  # quadratic rescans would take minutes
    assert (out, len(tap.frames)) == (DONE, 1)


PIECES = st.sampled_from(
    [ORDINARY, RECEIPT, DONE, LOOKALIKE,
     b'event: receipt\ndata: {"finalAmountWei":"7"}\n\n', b'event: compose.error\ndata: {"code":"x"}\n\n',
     b"event: error\ndata: {}\n\n", b"event:compose.receipt\ndata: 1\n\n", b"event: message\ndata: kept\n\n",
     b"event: ping\n\n", b"id: 7\nevent: compose.receipt\ndata: {}\n\n", b": comment\n\n", b"\n", b"\r",
     b'data: {"service_tier":"default","vvv":"event:"}\n\n', b"data: e\nevent: receipt\n\n", b"ev", b"event",
     b"event: errors\ndata: receipt\n\n", b'event: content_block_delta\ndata: {"error":"receipt"}\n\n',
     b"event:\t receipt \ndata: {}\n\n", b"event: receipt x\n\n", b"data: error receipt\n\n", NAMED,
     b"event: compose.receipt", b"data: x", b"\xff"]
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(PIECES, max_size=25), st.sampled_from(sorted(ENDINGS)), st.data(), st.booleans())
def test_any_chunking_agrees_with_the_reference(
    pieces: list[bytes], ending: str, data: st.DataObject, keep: bool
) -> None:
    stream = with_ending(b"".join(pieces), ending)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    expected, frames = reference(stream)
    out, tap = run(chunks, keep_frames=keep)
    assert out == (stream if keep else expected)
    assert [frame.raw for frame in tap.frames] == frames
