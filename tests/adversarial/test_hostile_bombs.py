"""JSON bombs from a hostile server: deep nesting where the client parses JSON it did not choose.

Importing x402pay (eth-account pulls in py_ecc) raises the interpreter's recursion limit to 100,000, so catching
RecursionError is no guard: CPython's C JSON decoder would overflow the C stack first and the process would die with
SIGSEGV. x402pay bounds the nesting before parsing (`x402pay._protocol.codec.check_depth`). These tests run the client
in a child process, so that a regression shows as a dead child (its signal named), not as a dead suite.
"""

from __future__ import annotations

import sys

import pytest
from hostile_support import Hostile, Reply, challenge, challenge_reply, challenge_then, requirement, run_child, sse

from x402pay._protocol.codec import MAX_BODY_BYTES

pytestmark = pytest.mark.chain

#: The deepest JSON list that fits in a body the client agrees to read.
DEPTH = (MAX_BODY_BYTES - 64) // 2


def bomb(depth: int = DEPTH) -> bytes:
    return b"[" * depth + b"]" * depth


def test_importing_x402pay_raises_the_recursion_limit() -> None:
    assert sys.getrecursionlimit() >= 100_000  # the premise of this module (py_ecc does it on import)


def test_a_header_sized_bomb_is_a_typed_refusal(hostile: Hostile) -> None:
    """The 64 KiB header limit keeps a bomb in PAYMENT-REQUIRED shallow enough (about 24,000 levels) to refuse."""
    hostile.script = lambda call: challenge_reply(__import__("base64").b64encode(bomb(24_000)).decode())

    outcome = run_child(hostile.devnet, hostile.url + "/report")

    assert (outcome.returncode, outcome.stdout.split()) == (0, ["typed", "ChallengeError"])
    assert hostile.signatures == []


def test_a_v1_challenge_body_bomb_is_a_typed_refusal(hostile: Hostile) -> None:
    body = b'{"x402Version":1,"accepts":' + bomb(DEPTH - 20) + b"}"
    hostile.script = lambda call: Reply(402, [("content-type", "application/json")], body)

    outcome = run_child(hostile.devnet, hostile.url + "/report")

    assert hostile.signatures == []  # holds: the process dies before it could sign
    assert outcome.returncode == 0, f"the client process died with signal {-outcome.returncode}"


def test_a_paid_json_body_bomb_leaves_the_payment_unsettled(hostile: Hostile) -> None:
    body = b'{"receipt":' + bomb(DEPTH - 20) + b"}"
    hostile.script = challenge_then(
        challenge_reply(challenge(requirement(hostile.devnet))),
        lambda call: Reply(200, [("content-type", "application/json")], body),
    )

    outcome = run_child(hostile.devnet, hostile.url + "/report")

    assert outcome.returncode == 0, f"the client process died with signal {-outcome.returncode}"
    assert outcome.stdout.split() == ["answer", "200"]


def test_an_sse_receipt_frame_bomb_leaves_the_payment_unsettled(hostile: Hostile) -> None:
    frame = b"event: compose.receipt\ndata: " + bomb(DEPTH - 100) + b"\n\n"
    hostile.script = challenge_then(
        challenge_reply(challenge(requirement(hostile.devnet))),
        lambda call: Reply(200, [("content-type", "text/event-stream")], [sse(None, "hello"), frame]),
    )

    outcome = run_child(hostile.devnet, hostile.url + "/report")

    assert outcome.returncode == 0, f"the client process died with signal {-outcome.returncode}"
    assert outcome.stdout.split() == ["answer", "200"]
