"""Fuzzing the decoders a hostile peer feeds: only typed errors come out, never another exception, never a signature.

The suite runs a moderate number of examples per property (``X402PAY_FUZZ_EXAMPLES``, 1,500 by default; the
slower paid-answer, hostile-RPC and whole-client properties a fifth of that, ``X402PAY_FUZZ_CLIENT_EXAMPLES``).
The bench-style run of the issue (at least 100,000 inputs per decoder, counted in `INPUTS`) is
``bench/fuzz_decoders.py``::

    .venv/bin/python -m bench.fuzz_decoders --examples 100000 --jobs 2

JSON nesting stays shallow here: the deep bombs (which would overflow the C stack if the depth check before parsing
regressed) run in a child process in test_hostile_bombs.py.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from collections import Counter
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from x402pay import PaymentTransport, SpendPolicy, Wallet
from x402pay._flow import apply_frame, conclude, conclude_body, decode_challenge, read_settlement
from x402pay._payment import Payment, PaymentStatus
from x402pay._protocol.abi import AUTHORIZATION_USED_TOPIC, TRANSFER_TOPIC, address_topic
from x402pay._protocol.codec import decode_header
from x402pay._protocol.models import PaymentRequirements
from x402pay._receipts import Receipt, read_compose_receipt, receipt_from_header
from x402pay._schemes.signing import sign_requirement
from x402pay._sse import SSETap, VendorFrame
from x402pay.errors import (
    ChallengeError,
    PaymentError,
    PaymentRejected,
    ReceiptMismatch,
    SettlementError,
    SettlementFailed,
    X402PayError,
)
from x402pay.verify import Claim, Verdict
from x402pay.verify._chain import Rules
from x402pay.verify._steps import Batch, unpack

EXAMPLES = int(os.environ.get("X402PAY_FUZZ_EXAMPLES", "1500"))
CLIENT_EXAMPLES = int(os.environ.get("X402PAY_FUZZ_CLIENT_EXAMPLES", str(max(EXAMPLES // 5, 50))))
USDC = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
PAYEE = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
#: Inputs each property ran, per property name: the bench run reports them.
INPUTS: Counter[str] = Counter()
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck), derandomize=False
)

json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=30,
)


def b64(raw: bytes, *, urlsafe: bool = False) -> str:
    return (base64.urlsafe_b64encode(raw).decode().rstrip("=")) if urlsafe else base64.b64encode(raw).decode()


header_texts = st.one_of(
    st.text(max_size=200),
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_ ", max_size=200),
    st.binary(max_size=300).map(b64),
    st.binary(max_size=300).map(lambda raw: b64(raw, urlsafe=True)),
    json_values.map(lambda value: b64(json.dumps(value).encode())),
)


@FUZZ
@given(header_texts)
def test_decode_header_raises_only_the_named_error(text: str) -> None:
    INPUTS["decode_header"] += 1
    with contextlib.suppress(ChallengeError):
        decode_header(text, what="fuzz", error=ChallengeError)


@FUZZ
@given(header_texts, st.binary(max_size=300), st.sampled_from(["application/json", "text/plain", ""]))
def test_decode_challenge_raises_only_challenge_errors(header: str, body: bytes, content_type: str) -> None:
    INPUTS["decode_challenge"] += 1
    for headers in ({"PAYMENT-REQUIRED": header, "content-type": content_type}, {"content-type": content_type}):
        with contextlib.suppress(ChallengeError):
            decode_challenge(headers, body)


sse_pieces = st.sampled_from(
    [b"event: compose.receipt\n", b"event: compose.error\n", b"event: receipt\r\n", b"event: message\n",
     b"event:", b"data: ", b'{"finalAmountWei":"5"}', b"\n", b"\r", b"\r\n", b"\n\n", b":", b"data: [DONE]\n\n",
     b"e", b"ev", b"id: 1\n", b"\xff\xfe", b"[" * 50]
)  # fmt: skip
sse_streams = st.one_of(st.binary(max_size=2000), st.lists(sse_pieces, max_size=60).map(b"".join))


@FUZZ
@given(sse_streams, st.data(), st.booleans())
def test_the_sse_tap_never_raises_and_never_loses_bytes(stream: bytes, data: st.DataObject, keep: bool) -> None:
    INPUTS["sse_tap"] += 1
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    tap = SSETap(keep_frames=keep)
    out = b"".join(tap.feed(chunk) for chunk in chunks) + tap.finish()
    if keep:
        assert out == stream
    else:
        assert len(out) + sum(len(frame.raw) for frame in tap.frames) == len(stream)


receipt_objects = st.one_of(
    json_values,
    st.dictionaries(
        st.sampled_from(
            [
                "finalAmountWei",
                "final_amount_wei",
                "txHash",
                "network",
                "settledAt",
                "userAddress",
                "lineItems",
                "settlementStatus",
                "payer",
            ]
        ),
        json_values
        | st.integers(-(2**300), 2**300).map(str)
        | st.integers(-(2**300), 2**300)
        | st.sampled_from([253402300800000, 2**53 - 1, 2**53, -1, 1e300, 0.5, "0x10", "\uff11\uff10"]),
        max_size=9,
    ),
)


@FUZZ
@given(receipt_objects, st.text(max_size=10))
def test_compose_receipt_returns_a_receipt_or_a_settlement_error(data: Any, source: str) -> None:
    INPUTS["compose_receipt"] += 1
    try:
        receipt = read_compose_receipt(data, source=source)
    except SettlementError:
        return
    assert isinstance(receipt, Receipt)
    assert 0 <= receipt.amount < 2**256


@pytest.mark.parametrize("settled_at", [253402300800000, 2**53 - 1])
def test_compose_receipt_with_a_settled_at_after_year_9999_is_typed(settled_at: int) -> None:
    with contextlib.suppress(SettlementError):
        read_compose_receipt({"finalAmountWei": "1", "settledAt": settled_at}, source="fuzz")


# -- settlement headers and whole paid answers -----------------------------------------------------------------

weird_amounts_for_receipts = st.one_of(
    st.integers(-(2**260), 2**260), st.integers(0, 100_000).map(str), st.text(max_size=12),
    st.sampled_from(["-1", "1.5", "0x10", "1e3", "\uff11\uff10", str(2**256), " 5", "10000"]), st.booleans(), st.none(),
)  # fmt: skip
tx_hashes = st.one_of(st.just("0x" + "ab" * 32), st.text(max_size=80), st.integers(), st.none())
settlement_objects = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"success": st.one_of(st.booleans(), st.sampled_from(["true", 1, 0, None]))},
        optional={
            "transaction": tx_hashes,
            "network": st.sampled_from(["eip155:8453", "eip155:1", "base", "", "eip155:" + "9" * 90]) | st.integers(),
            "payer": st.sampled_from([None, "0x" + "11" * 20, "nobody", ""]) | st.integers(),
            "amount": weird_amounts_for_receipts,
            "errorReason": st.text(max_size=30) | st.integers(),
            "extensions": json_values,
        },
    ),
)
settlement_headers = st.one_of(header_texts, settlement_objects.map(lambda value: b64(json.dumps(value).encode())))
SETTLEMENT_NAMES = ["PAYMENT-RESPONSE", "X-PAYMENT-RESPONSE", "X-Receipt", "X-Compose-Receipt"]


def wire_headers(fields: dict[str, str]) -> httpx.Headers:
    """Headers as a response carries them: bytes on the wire (here UTF-8), decoded by httpx."""
    return httpx.Headers({name: value.encode() for name, value in fields.items()})


@FUZZ
@given(st.dictionaries(st.sampled_from(SETTLEMENT_NAMES), settlement_headers, max_size=4))
def test_settlement_headers_raise_only_settlement_errors(fields: dict[str, str]) -> None:
    INPUTS["settlement_headers"] += 1
    headers = wire_headers(fields)
    with contextlib.suppress(SettlementError):
        read_settlement(headers)
    with contextlib.suppress(SettlementError):
        receipt = receipt_from_header(headers)
        assert receipt is None or 0 <= receipt.amount < 2**256


SIGNED = sign_requirement(
    Wallet.from_key("0x" + "44" * 32),
    PaymentRequirements.model_validate(
        {"scheme": "exact", "network": "eip155:8453", "amount": "10000", "asset": USDC, "payTo": PAYEE,
         "maxTimeoutSeconds": 60, "extra": {"name": "USD Coin", "version": "2"}}
    ),
    now=1_750_000_000,
    max_lifetime=60,
)  # fmt: skip
json_bodies = st.one_of(
    st.binary(max_size=300),
    st.dictionaries(st.sampled_from(["receipt", "compose_receipt", "error"]), receipt_objects, max_size=2).map(
        lambda value: json.dumps(value).encode()
    ),
)
frames = st.builds(
    VendorFrame,
    st.sampled_from(["compose.receipt", "receipt", "compose.error", "error"]),
    receipt_objects,
    st.just(b""),
)


@settings(max_examples=CLIENT_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(
    st.sampled_from([200, 201, 204, 400, 402, 500]),
    st.dictionaries(st.sampled_from(SETTLEMENT_NAMES), settlement_headers, max_size=3),
    json_bodies,
    st.lists(frames, max_size=3),
)
def test_a_fuzzed_paid_answer_is_read_with_only_typed_errors_and_never_above_the_signed_amount(
    status: int, fields: dict[str, str], body: bytes, stream: list[VendorFrame]
) -> None:
    INPUTS["paid_answer"] += 1
    payment = Payment(origin="https://fuzz.example", x402_version=2, signed=SIGNED)
    try:
        conclude(payment, status, wire_headers(fields), body)
        conclude_body(payment, body)
        for frame in stream:
            apply_frame(payment, frame)
    except (PaymentRejected, ReceiptMismatch, SettlementFailed):
        pass
    if payment.status is PaymentStatus.SETTLED and payment.mismatch is None:
        assert payment.receipt is not None
        assert payment.receipt.amount == SIGNED.amount  # exact: the signed amount, nothing else, unflagged


# -- a hostile verification RPC: any JSON it answers ends in a verdict, never an exception -------------------------

PERMIT2_SIGNED = sign_requirement(
    Wallet.from_key("0x" + "44" * 32),
    PaymentRequirements.model_validate(
        {"scheme": "exact", "network": "eip155:8453", "amount": "10000", "asset": USDC, "payTo": PAYEE,
         "maxTimeoutSeconds": 60, "extra": {"name": "USD Coin", "version": "2", "assetTransferMethod": "permit2"}}
    ),
    now=1_750_000_000,
    max_lifetime=60,
)  # fmt: skip
CLAIMS = [
    Claim.from_signed(signed, 10_000, tx_hash)
    for signed in (SIGNED, PERMIT2_SIGNED)
    for tx_hash in ("0x" + "ab" * 32, None)
]
hexes = st.one_of(
    st.integers(0, 2**300).map(hex), st.sampled_from(["0x", "0x0", "0x1", "0xzz", "", "1", "-0x1", "0x" + "f" * 5000])
)
topics = st.sampled_from([TRANSFER_TOPIC, AUTHORIZATION_USED_TOPIC, address_topic(PAYEE), "0x" + "00" * 32]) | hexes
logs = st.fixed_dictionaries(
    {},
    optional={
        "address": st.sampled_from([USDC, USDC.lower(), "0x" + "11" * 20]) | json_scalars,
        "topics": st.lists(topics, max_size=4) | json_scalars,
        "data": hexes | json_scalars,
        "blockNumber": hexes,
        "logIndex": hexes,
        "transactionHash": st.just("0x" + "ab" * 32) | hexes,
    },
)
rpc_results = st.one_of(
    json_values,
    hexes,
    st.fixed_dictionaries({}, optional={"number": hexes, "timestamp": hexes | json_scalars}),
    st.fixed_dictionaries(
        {},
        optional={
            "status": st.sampled_from(["0x1", "0x0", 1, None]),
            "blockNumber": hexes,
            "logs": st.lists(logs, max_size=4) | json_scalars,
        },
    ),
    st.fixed_dictionaries(
        {}, optional={"to": st.sampled_from([PAYEE, "0x" + "22" * 20]) | json_scalars, "input": hexes | json_scalars}
    ),
)


def rpc_batches(count: int) -> st.SearchStrategy[Any]:
    """A decoded JSON-RPC batch answer of `count` items (results or errors), or any other JSON."""
    item = st.one_of(
        rpc_results.map(lambda result: {"jsonrpc": "2.0", "result": result}),
        json_values.map(lambda error: {"jsonrpc": "2.0", "error": error}),
        json_values,
    )
    return st.one_of(st.lists(item, min_size=count, max_size=count), json_values)


@settings(max_examples=CLIENT_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_any_answer_of_a_hostile_rpc_ends_in_a_verdict_for_every_claim(data: st.DataObject) -> None:
    INPUTS["hostile_rpc"] += 1
    batch = Batch(CLAIMS, Rules(confirmations=data.draw(st.integers(0, 3)), seen_transactions=None, lookback_blocks=50))
    for _ in range(6):  # a claim takes at most three rounds
        requests = batch.requests()
        if not requests:
            break
        batch.feed(unpack(data.draw(rpc_batches(len(requests))), len(requests)))
    assert batch.requests() == []
    verifications = batch.verifications()
    assert [verification.claim for verification in verifications] == CLAIMS
    assert all(isinstance(verification.verdict, Verdict) for verification in verifications)


# -- the whole client against fuzzed challenges: a signature only for what the policy allows ------------------

NOW = 1_750_000_000
POLICY = SpendPolicy(max_per_request=50_000, networks=("eip155:8453",), payees=frozenset({PAYEE}), max_lifetime=120)
WALLET = Wallet.from_key("0x" + "33" * 32)

weird_amounts = st.one_of(
    st.integers(-(2**260), 2**260), st.integers(0, 100_000).map(str), st.text(max_size=12),
    st.sampled_from(["-1", "1.5", "0x10", "1e3", "\uff11\uff10", str(2**256), " 5"]),
    st.floats(allow_nan=False, allow_infinity=False), st.booleans(), st.none(),
)  # fmt: skip
options = st.fixed_dictionaries(
    {
        "scheme": st.sampled_from(["exact", "upto", "stream", "", "EXACT"]),
        "network": st.sampled_from(["eip155:8453", "eip155:1", "base", "solana:x", "eip155:", "eip155:08453"]),
        "amount": weird_amounts,
        "asset": st.sampled_from([USDC, USDC.lower(), "0x" + "11" * 20, "usdc", ""]),
        "payTo": st.sampled_from([PAYEE, PAYEE.lower(), "0x" + "22" * 20, "nobody"]),
        "maxTimeoutSeconds": st.one_of(
            st.integers(-(10**12), 10**12), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=4)
        ),
    },
    optional={"extra": st.one_of(json_values, st.just({"name": "USD Coin", "version": "2"}))},
)


@settings(max_examples=CLIENT_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(st.lists(options, max_size=4), st.sampled_from([1, 2]))
def test_a_fuzzed_challenge_is_signed_only_within_the_policy(accepts: list[dict[str, Any]], version: int) -> None:
    INPUTS["whole_client"] += 1
    sent: list[httpx.Request] = []

    def peer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        if len(sent) > 1:
            return httpx.Response(200)
        data = {"x402Version": version, "accepts": accepts}
        if version == 1:
            return httpx.Response(402, json=data)
        return httpx.Response(402, headers={"PAYMENT-REQUIRED": b64(json.dumps(data).encode())})

    transport = PaymentTransport(wallet=WALLET, policy=POLICY, inner=httpx.MockTransport(peer), clock=lambda: NOW)
    try:
        httpx.Client(transport=transport).get("https://fuzz.example/")
    except PaymentError:
        pass
    except X402PayError as exc:  # pragma: no cover - any other typed error is still a finding
        raise AssertionError(f"unexpected {type(exc).__name__}: {exc}") from exc
    assert len(sent) <= 2
    if len(sent) == 2:
        header = sent[1].headers.get("payment-signature") or sent[1].headers["x-payment"]
        payload = json.loads(base64.b64decode(header))["payload"]
        authorization = payload.get("authorization") or payload["permit2Authorization"]
        amount = int(authorization.get("value") or authorization["permitted"]["amount"])
        assert 0 <= amount <= POLICY.max_per_request
        deadline = int(authorization.get("validBefore") or authorization["deadline"])
        assert deadline <= NOW + POLICY.max_lifetime
