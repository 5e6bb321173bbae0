"""The SSE tap: vendor frames found and removed wherever the stream is split; everything else untouched."""

from __future__ import annotations

import tracemalloc

import pytest

from x402pay._sse import MAX_FRAME_BYTES, SSETap

STREAM = (
    b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n'
    b"event: message\ndata: kept\n\n"
    b": a comment\n\n"
    b"id: 7\nevent: compose.receipt\ndata: {}\n\n"  # not a vendor frame for us: its first line is not event:
    b'event: compose.receipt\ndata: {"finalAmountWei":"5",\ndata: "txHash":"0xab"}\n\n'
    b"data: [DONE]\n\n"
)
EXPECTED = (
    b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n'
    b"event: message\ndata: kept\n\n"
    b": a comment\n\n"
    b"id: 7\nevent: compose.receipt\ndata: {}\n\n"
    b"data: [DONE]\n\n"
)
ENDINGS = {"lf": b"\n", "crlf": b"\r\n", "cr": b"\r"}


def run(tap: SSETap, pieces: list[bytes]) -> bytes:
    return b"".join(tap.feed(piece) for piece in pieces) + tap.finish()


@pytest.mark.parametrize("ending", ENDINGS)
def test_every_split_into_three_pieces_gives_the_same_result(ending: str) -> None:
    stream, expected = STREAM.replace(b"\n", ENDINGS[ending]), EXPECTED.replace(b"\n", ENDINGS[ending])
    for first in range(0, len(stream), 3):
        for second in range(first, len(stream)):
            tap = SSETap()
            assert run(tap, [stream[:first], stream[first:second], stream[second:]]) == expected, (first, second)
            assert [frame.data for frame in tap.frames] == [{"finalAmountWei": "5", "txHash": "0xab"}]


def test_byte_by_byte() -> None:
    tap = SSETap()
    assert run(tap, [bytes([byte]) for byte in STREAM]) == EXPECTED
    assert tap.frames[0].event == "compose.receipt"


def test_frames_can_be_kept() -> None:
    tap = SSETap(keep_frames=True)
    assert run(tap, [STREAM]) == STREAM
    assert len(tap.frames) == 1


def test_the_paid_apis_frames_are_captured_and_a_bare_error_event_passes_through() -> None:
    anthropic_error = b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error"}}\n\n'
    stream = (
        b'data: 1\n\nevent: receipt\ndata: {"finalAmountWei":"1"}\n\n'
        b'event: compose.error\ndata: {"code":"upstream_error","message":"settle failed"}\n\n'
        + anthropic_error
        + b"data: [DONE]\n\n"
    )
    tap = SSETap()
    assert run(tap, [stream]) == b"data: 1\n\n" + anthropic_error + b"data: [DONE]\n\n"  # byte for byte
    assert [(frame.event, frame.data) for frame in tap.frames] == [
        ("receipt", {"finalAmountWei": "1"}),
        ("compose.error", {"code": "upstream_error", "message": "settle failed"}),
    ]


def test_a_frame_with_bad_json_is_captured_with_no_data() -> None:
    tap = SSETap()
    run(tap, [b"event: compose.receipt\ndata: {not json\n\n"])
    assert tap.frames[0].data is None


def test_bytes_of_ordinary_frames_go_out_at_once() -> None:
    tap = SSETap()
    assert tap.feed(b'data: {"partial') == b'data: {"partial'  # no waiting for the end of the line or frame
    assert tap.feed(b"\n\nev") == b"\n\n"  # might be "event:": held...
    assert tap.feed(b"ent: ping\n") == b"event: ping\n"  # ...until the name shows it is not a vendor frame


def test_an_oversized_vendor_frame_is_passed_through_unparsed() -> None:
    frame = b"event: compose.receipt\ndata: " + b"x" * (MAX_FRAME_BYTES + 10_000) + b"\n\n"
    tap = SSETap()
    assert run(tap, [frame[i : i + 4096] for i in range(0, len(frame), 4096)]) == frame
    assert tap.oversized
    assert tap.frames == []


def test_an_unterminated_final_vendor_frame_still_counts() -> None:
    tap = SSETap()
    assert run(tap, [b'data: 1\n\nevent: compose.receipt\ndata: {"finalAmountWei":"3"}']) == b"data: 1\n\n"
    assert tap.frames[0].data == {"finalAmountWei": "3"}


def test_many_megabytes_pass_without_growing_memory() -> None:
    chunk = b'data: {"choices":[{"delta":{"content":"' + b"y" * 900 + b'"}}]}\n\n'
    block = chunk * 64  # about 60 KB per network read
    tap = SSETap()
    tracemalloc.start()
    try:
        passed = 0
        for _ in range(400):  # about 24 MB
            passed += len(tap.feed(block))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert passed == 400 * len(block)
    assert peak < 2_000_000
