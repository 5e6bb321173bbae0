"""Lying receipts: forged, replayed, too dear, on the wrong chain, for someone else; frames split, repeated, cut.

The hostile server settles for real on anvil (or not at all), then says whatever the test wants. A claim that
contradicts what was signed, or the chain, is fraud: flagged on the Payment, raised, booked, the origin marked.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from hostile_support import (
    PRICE,
    STRANGER,
    Balances,
    Call,
    Hostile,
    Reply,
    async_client,
    b64,
    challenge,
    challenge_reply,
    challenge_then,
    client,
    compose,
    requirement,
    settle_honestly,
    settled_header,
    sse,
    wallet,
)

from x402pay import (
    OriginUntrusted,
    Payment,
    PaymentStatus,
    ReceiptMismatch,
    SettlementFailed,
    TrustStore,
    payment_of,
)
from x402pay._protocol.models import SettleResponse
from x402pay._sse import MAX_FRAME_BYTES, SSETap
from x402pay.ledger import EntryState, Ledger
from x402pay.testing import Devnet

pytestmark = pytest.mark.chain

FAKE_TX = "0x" + "ab" * 32


def pays_then(hostile: Hostile, answer: Callable[[Call], Reply]) -> None:
    hostile.script = challenge_then(challenge_reply(challenge(requirement(hostile.devnet))), answer)


def lying(**lies: Any) -> Callable[[Call], Reply]:
    """Settle for real, then report the settlement with `lies` in PAYMENT-RESPONSE."""

    def answer(call: Call) -> Reply:
        settlement = call.settle()
        return Reply(200, [settled_header(settlement, **lies), ("content-type", "text/plain")], b"paid")

    return answer


def stream(*frames: bytes, pause: float = 0.0, cut: bool = False, hang: bool = False) -> Callable[[Call], Reply]:
    """Settle for real; stream `frames` (callables get the settlement) as an SSE answer."""

    def answer(call: Call) -> Reply:
        settlement = call.settle()
        body = [frame(settlement) if callable(frame) else frame for frame in frames]
        return Reply(200, [("content-type", "text/event-stream")], body, pause=pause, cut=cut, hang=hang)

    return answer


def receipt_frame(devnet: Devnet, **lies: Any) -> Callable[[SettleResponse], bytes]:
    return lambda settlement: sse("compose.receipt", compose(settlement, wallet(devnet).address, **lies))


def read_stream(devnet: Devnet, url: str, **options: Any) -> tuple[list[str], Payment | None, BaseException | None]:
    """Stream `url`; the lines that arrived, the Payment, and what was raised while reading (if anything)."""
    lines: list[str] = []
    with client(devnet, **options) as http, http.stream("GET", url) as response:
        try:
            lines.extend(line for line in response.iter_lines() if line)
        except (httpx.HTTPError, ReceiptMismatch, SettlementFailed) as exc:
            return lines, payment_of(response), exc
    return lines, payment_of(response), None


# -- headers ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lies", "problem"),
    [
        ({"amount": str(PRICE + 1)}, "above the signed maximum"),
        ({"amount": str(2**200)}, "above the signed maximum"),
        ({"amount": "1"}, "for an exact payment"),
        ({"network": "eip155:1"}, "network"),
        ({"network": "eip155:84532"}, "network"),
        ({"payer": STRANGER}, "payer"),
    ],
)
def test_a_lying_settlement_header_is_fraud(
    hostile: Hostile, tmp_path: Path, lies: dict[str, Any], problem: str
) -> None:
    pays_then(hostile, lying(**lies))
    ledger, trust = Ledger.sqlite(tmp_path / "spend.db"), TrustStore()

    with client(hostile.devnet, ledger=ledger, trust=trust) as http:
        with pytest.raises(ReceiptMismatch, match=problem) as caught:
            http.get(hostile.url + "/report")
        with pytest.raises(OriginUntrusted):
            http.get(hostile.url + "/report")

    payment = caught.value.payment
    assert isinstance(payment, Payment)
    assert payment.mismatch is not None
    (entry,) = ledger.entries()
    assert entry.state is EntryState.MISMATCH
    assert entry.held == PRICE  # the signed maximum stays counted
    assert trust.reason(hostile.url) is not None
    assert len(hostile.signatures) == 1  # the untrusted origin got no second payment


def test_a_forged_receipt_for_a_transaction_that_does_not_exist_is_fraud(hostile: Hostile, tmp_path: Path) -> None:
    forged = SettleResponse(success=True, transaction=FAKE_TX, network=hostile.devnet.network)
    pays_then(hostile, lambda call: Reply(200, [settled_header(forged)], b"paid"))
    balances = Balances(hostile.devnet)
    ledger = Ledger.sqlite(tmp_path / "spend.db")

    with (
        client(hostile.devnet, rpc_url=hostile.devnet.rpc_url, verify="inline", verify_patience=0.5, ledger=ledger)
        as http,
        pytest.raises(ReceiptMismatch, match="no transaction 0xabab") as caught,
    ):  # fmt: skip
        http.get(hostile.url + "/report")

    payment = caught.value.payment
    assert isinstance(payment, Payment)
    assert payment.verification is not None
    assert payment.verification.verdict == "not_found"  # still nowhere after the verifier's patience: a lie
    (entry,) = ledger.entries()
    assert (entry.state, entry.held) == (EntryState.MISMATCH, PRICE)
    assert hostile.url in ledger.untrusted()
    assert balances.moved() == 0


def test_a_receipt_for_someone_elses_payment_is_fraud(hostile: Hostile, tmp_path: Path) -> None:
    """The server settles a payment of another payer and shows us that transaction."""
    pays_then(hostile, settle_honestly)
    their_payer = hostile.devnet.payers[0]  # the suite's client pays with payers[1]
    other = dataclasses.replace(hostile.devnet, payers=(their_payer, their_payer))
    with client(other) as http:
        theirs = payment_of(http.get(hostile.url + "/report"))
    assert theirs is not None
    assert theirs.transaction is not None

    pays_then(hostile, lying(transaction=theirs.transaction))
    trust = TrustStore()
    with (
        client(hostile.devnet, rpc_url=hostile.devnet.rpc_url, verify="inline", trust=trust) as http,
        pytest.raises(ReceiptMismatch, match="chain contradicts"),
    ):
        http.get(hostile.url + "/report")

    assert trust.reason(hostile.url) is not None


def test_a_replayed_receipt_of_our_own_earlier_payment_is_fraud(hostile: Hostile) -> None:
    pays_then(hostile, settle_honestly)
    with client(hostile.devnet, rpc_url=hostile.devnet.rpc_url, verify="inline") as http:
        first = payment_of(http.get(hostile.url + "/report"))
        assert first is not None
        assert first.verification.verified
        pays_then(hostile, lying(transaction=first.transaction))
        with pytest.raises(ReceiptMismatch, match="authorization"):
            http.get(hostile.url + "/report")


def test_a_malformed_settlement_header_on_a_paid_answer_is_recorded_not_raised(hostile: Hostile) -> None:
    pays_then(hostile, lambda call: Reply(200, [("payment-response", "%%% not base64")], b"paid"))

    with client(hostile.devnet) as http:
        response = http.get(hostile.url + "/report")

    payment = payment_of(response)
    assert payment is not None
    assert payment.status is PaymentStatus.UNSETTLED
    assert payment.settlement_error is not None
    assert "not base64" in payment.settlement_error


@pytest.mark.parametrize("amount", ["-1", "0x10", "1.0", str(2**256), None])
def test_a_malformed_compose_header_receipt_leaves_the_payment_unsettled(hostile: Hostile, amount: Any) -> None:
    pays_then(hostile, lambda call: Reply(200, [("x-receipt", b64({"finalAmountWei": amount}))], b"paid"))

    with client(hostile.devnet) as http:
        response = http.get(hostile.url + "/report")

    payment = payment_of(response)
    assert payment is not None
    assert payment.status is PaymentStatus.UNSETTLED
    assert payment.settlement_error is not None


def test_a_json_body_receipt_for_another_payer_is_fraud(hostile: Hostile) -> None:
    def answer(call: Call) -> Reply:
        settlement = call.settle()
        body = {"answer": 42, "receipt": compose(settlement, STRANGER)}
        return Reply(200, [("content-type", "application/json")], json.dumps(body).encode())

    pays_then(hostile, answer)

    with client(hostile.devnet) as http, pytest.raises(ReceiptMismatch, match="payer") as caught:
        http.get(hostile.url + "/report")

    payment = caught.value.payment
    assert isinstance(payment, Payment)
    assert payment.mismatch is not None


# -- streams ----------------------------------------------------------------------------------------------------


def test_a_receipt_frame_split_byte_by_byte_is_still_read(hostile: Hostile) -> None:
    def answer(call: Call) -> Reply:
        settlement = call.settle()
        frame = sse("compose.receipt", compose(settlement, wallet(hostile.devnet).address))
        pieces = [sse(None, "hello"), *(frame[i : i + 1] for i in range(len(frame))), sse(None, "[DONE]")]
        return Reply(200, [("content-type", "text/event-stream")], pieces, pause=0.001)

    pays_then(hostile, answer)

    lines, payment, error = read_stream(hostile.devnet, hostile.url + "/report")

    assert error is None
    assert lines == ["data: hello", "data: [DONE]"]
    assert payment is not None
    assert payment.status is PaymentStatus.SETTLED
    assert payment.settled_amount == PRICE


def test_a_duplicated_receipt_frame_counts_once(hostile: Hostile, tmp_path: Path) -> None:
    ledger = Ledger.sqlite(tmp_path / "spend.db")
    frame = receipt_frame(hostile.devnet)
    pays_then(hostile, stream(sse(None, "a"), frame, frame, frame, sse(None, "[DONE]")))

    lines, payment, error = read_stream(hostile.devnet, hostile.url + "/report", ledger=ledger)

    assert error is None
    assert lines == ["data: a", "data: [DONE]"]
    assert payment is not None
    assert payment.settled_amount == PRICE
    (entry,) = ledger.entries()
    assert (entry.state, entry.claimed_amount, entry.held) == (EntryState.CLAIMED, PRICE, PRICE)


def test_a_second_different_receipt_frame_is_fraud(hostile: Hostile, tmp_path: Path) -> None:
    ledger = Ledger.sqlite(tmp_path / "spend.db")
    pays_then(
        hostile,
        stream(receipt_frame(hostile.devnet), receipt_frame(hostile.devnet, finalAmountWei="9999"), sse(None, "x")),
    )

    _lines, payment, error = read_stream(hostile.devnet, hostile.url + "/report", ledger=ledger)

    assert isinstance(error, ReceiptMismatch)
    assert payment is not None
    assert payment.mismatch is not None
    assert ledger.entries()[0].state is EntryState.MISMATCH


def test_a_receipt_frame_above_the_maximum_is_fraud_after_the_content(hostile: Hostile) -> None:
    pays_then(hostile, stream(sse(None, "content"), receipt_frame(hostile.devnet, finalAmountWei=str(PRICE * 5))))

    lines, payment, error = read_stream(hostile.devnet, hostile.url + "/report")

    assert lines == ["data: content"]  # the bytes before the frame reached the caller
    assert isinstance(error, ReceiptMismatch)
    assert payment is not None
    assert payment.mismatch is not None


def test_a_receipt_frame_on_the_wrong_network_is_fraud(hostile: Hostile) -> None:
    pays_then(hostile, stream(sse(None, "content"), receipt_frame(hostile.devnet, network="eip155:8453")))

    _, payment, error = read_stream(hostile.devnet, hostile.url + "/report")

    assert isinstance(error, ReceiptMismatch)
    assert "network" in str(error)
    assert payment is not None
    assert payment.mismatch is not None


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_compose_error_after_content_is_settlement_failed(hostile: Hostile, tmp_path: Path, flavour: str) -> None:
    ledger = Ledger.sqlite(tmp_path / "spend.db")
    error_frame = sse("compose.error", {"error": {"code": "upstream_error", "message": "settlement failed"}})
    hostile.script = challenge_then(
        challenge_reply(challenge(requirement(hostile.devnet))),
        lambda call: Reply(200, [("content-type", "text/event-stream")], [sse(None, "content"), error_frame]),
    )

    lines: list[str] = []
    if flavour == "sync":
        with (
            client(hostile.devnet, ledger=ledger) as http,
            http.stream("GET", hostile.url + "/report") as response,
            pytest.raises(SettlementFailed, match="settlement failed") as caught,
        ):
            lines.extend(line for line in response.iter_lines() if line)
    else:

        async def go() -> Any:
            async with (
                async_client(hostile.devnet, ledger=ledger) as http,
                http.stream("GET", hostile.url + "/report") as response,
            ):
                async for line in response.aiter_lines():
                    if line:
                        lines.append(line)
                return response

        with pytest.raises(SettlementFailed, match="settlement failed") as caught:
            anyio.run(go)

    assert caught.value.code == "upstream_error"
    assert lines == ["data: content"]
    (entry,) = ledger.entries()
    assert entry.state is EntryState.UNKNOWN  # the server holds the signature: held until reconcile decides
    assert entry.held == PRICE


def test_a_stream_cut_mid_frame_leaves_the_payment_unsettled(hostile: Hostile, tmp_path: Path) -> None:
    ledger = Ledger.sqlite(tmp_path / "spend.db")

    def half(settlement: SettleResponse) -> bytes:
        frame = sse("compose.receipt", compose(settlement, wallet(hostile.devnet).address))
        return frame[: len(frame) // 2]

    pays_then(hostile, stream(sse(None, "content"), half, cut=True))

    lines, payment, error = read_stream(hostile.devnet, hostile.url + "/report", ledger=ledger)

    assert isinstance(error, httpx.RemoteProtocolError)
    assert lines == ["data: content"]
    assert payment is not None
    assert payment.status is PaymentStatus.UNSETTLED
    assert payment.receipt is None
    (entry,) = ledger.entries()
    assert entry.state in (EntryState.AUTHORIZED, EntryState.UNKNOWN)
    assert entry.held == PRICE


def test_a_stream_that_never_ends_times_out_with_the_payment_held(hostile: Hostile, tmp_path: Path) -> None:
    ledger = Ledger.sqlite(tmp_path / "spend.db")
    pays_then(hostile, stream(sse(None, "content"), hang=True))

    lines, payment, error = read_stream(
        hostile.devnet, hostile.url + "/report", ledger=ledger, timeout=httpx.Timeout(10, read=1.0)
    )

    assert isinstance(error, httpx.ReadTimeout)
    assert lines == ["data: content"]
    assert payment is not None
    assert payment.status is PaymentStatus.UNSETTLED
    (entry,) = ledger.entries()
    assert entry.held == PRICE


def test_an_oversized_receipt_frame_in_small_reads_passes_through_unparsed(hostile: Hostile) -> None:
    big = sse("compose.receipt", {"finalAmountWei": "1", "pad": "x" * 300_000})
    pieces = [big[i : i + 4096] for i in range(0, len(big), 4096)]
    pays_then(hostile, stream(*pieces, sse(None, "[DONE]"), pause=0.0005))

    lines, payment, error = read_stream(hostile.devnet, hostile.url + "/report")

    assert error is None
    assert payment is not None
    assert payment.receipt is None
    assert lines[-1] == "data: [DONE]"


def test_an_oversized_receipt_frame_in_one_read_passes_through_unparsed() -> None:
    big = sse("compose.receipt", {"finalAmountWei": "1", "pad": "x" * (MAX_FRAME_BYTES + 1000)})
    tap = SSETap()

    out = tap.feed(big) + tap.finish()

    assert tap.frames == []
    assert out == big


def test_a_receipt_settled_in_the_year_10000_is_recorded_not_raised(hostile: Hostile) -> None:
    def answer(call: Call) -> Reply:
        settlement = call.settle()
        receipt = compose(settlement, wallet(hostile.devnet).address, settledAt=253402300800000)
        return Reply(200, [("x-receipt", b64(receipt))], b"paid")

    pays_then(hostile, answer)

    with client(hostile.devnet) as http:
        response = http.get(hostile.url + "/report")

    assert response.status_code == 200


# -- duplicate settlement headers, an oversized paid body -------------------------------------------------------


@pytest.mark.parametrize("name", ["payment-response", "x-payment-response", "x-receipt"])
def test_duplicate_settlement_headers_that_disagree_settle_nothing(hostile: Hostile, tmp_path: Path, name: str) -> None:
    """Two claims in one answer (the honest one and a cheaper or dearer one): neither is taken, the maximum stays
    held until the chain (reconcile) says what moved."""

    def answer(call: Call) -> Reply:
        settlement = call.settle()
        if name == "x-receipt":
            claims = [compose(settlement, wallet(hostile.devnet).address, finalAmountWei=str(amount))
                      for amount in (PRICE, 1)]  # fmt: skip
        else:
            claims = [{**settlement.to_wire(), "amount": str(amount)} for amount in (PRICE, PRICE * 3)]
        return Reply(200, [(name, b64(claim)) for claim in claims], b"paid")

    pays_then(hostile, answer)
    ledger = Ledger.sqlite(tmp_path / "spend.db")

    with client(hostile.devnet, ledger=ledger) as http:
        response = http.get(hostile.url + "/report")

    assert response.status_code == 200
    payment = payment_of(response)
    assert payment is not None
    assert payment.receipt is None
    assert payment.status is PaymentStatus.UNSETTLED
    assert payment.settlement_error is not None
    (entry,) = ledger.entries()
    assert entry.state is EntryState.AUTHORIZED
    assert entry.held == PRICE
    assert len(hostile.signatures) == 1


def test_a_paid_json_body_beyond_the_size_limit_is_delivered_whole_and_its_receipt_not_parsed(
    hostile: Hostile, tmp_path: Path
) -> None:
    """A huge array around the receipt: the caller gets every byte, x402pay parses none of it (bounded decoding),
    and the payment stays unsettled with its maximum held."""
    body: bytes = b""

    def answer(call: Call) -> Reply:
        nonlocal body
        settlement = call.settle()
        data = {"receipt": compose(settlement, wallet(hostile.devnet).address), "rows": [0] * 2_000_000}
        body = json.dumps(data).encode()
        return Reply(200, [("content-type", "application/json")], body)

    pays_then(hostile, answer)
    ledger = Ledger.sqlite(tmp_path / "spend.db")

    with client(hostile.devnet, ledger=ledger) as http:
        response = http.get(hostile.url + "/report")

    assert response.content == body
    assert len(body) > 4_000_000
    payment = payment_of(response)
    assert payment is not None
    assert payment.receipt is None
    assert payment.status is PaymentStatus.UNSETTLED
    (entry,) = ledger.entries()
    assert (entry.state, entry.held) == (EntryState.AUTHORIZED, PRICE)
