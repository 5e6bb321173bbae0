"""The transports against an in-memory x402 peer (MockTransport) that really verifies signatures.

These pin the pure protocol steps; the same flows run against real servers on anvil in tests/integration.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data

import x402pay
from x402pay._payment import PaymentStatus, payment_of
from x402pay._policy import SpendPolicy
from x402pay._schemes.eip712 import transfer_with_authorization
from x402pay._transport import AsyncPaymentTransport, PaymentTransport
from x402pay._wallet import Wallet
from x402pay.errors import (
    BudgetExceeded,
    ChainUnavailable,
    ChallengeError,
    LedgerError,
    NotBudgeted,
    PaymentRejected,
    ReceiptMismatch,
    SettlementPending,
    SpendCapExceeded,
)
from x402pay.ledger import ANY_USDC, AsyncLedger, Budget, Ledger
from x402pay.ledger._backends import SQLiteDatabase

KEY = "0x" + "11" * 32
WALLET = Wallet.from_key(KEY)
USDC = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
PAYEE = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
NOW = 1_750_000_000
REQUIREMENT = {
    "scheme": "exact",
    "network": "eip155:8453",
    "amount": "10000",
    "asset": USDC,
    "payTo": PAYEE,
    "maxTimeoutSeconds": 60,
    "extra": {"name": "USD Coin", "version": "2", "custom": [1, {"k": None}]},
}


def b64(data: Any) -> str:
    return base64.b64encode(json.dumps(data).encode()).decode()


def unb64(text: str) -> Any:
    return json.loads(base64.b64decode(text))


class FakePeer:
    """An x402 v2 (or v1) server that checks what it is paid with and records every request it saw."""

    def __init__(self, version: int = 2, accepts: list[dict[str, Any]] | None = None) -> None:
        self.version = version
        self.accepts = accepts or [REQUIREMENT]
        self.requests: list[httpx.Request] = []
        self.reject_payment: str | None = None

    def challenge(self) -> httpx.Response:
        body = {"x402Version": self.version, "error": "payment required", "accepts": self.accepts}
        if self.version == 1:
            return httpx.Response(402, json=body)
        body["resource"] = {"url": "https://paid.example/data", "mimeType": "application/json"}
        body["extensions"] = {"bazaar": {"info": {"a": 1}, "schema": {}}}
        return httpx.Response(402, headers={"PAYMENT-REQUIRED": b64(body)}, json={})

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        header = request.headers.get("PAYMENT-SIGNATURE" if self.version == 2 else "X-PAYMENT")
        if header is None:
            return self.challenge()
        payload = unb64(header)
        self.verify(payload)
        if self.reject_payment:
            failed = {"success": False, "errorReason": self.reject_payment, "transaction": "", "network": "eip155:8453"}
            return httpx.Response(402, headers={"PAYMENT-RESPONSE": b64(failed)})
        settled = {"success": True, "transaction": "0x" + "ab" * 32, "network": "eip155:8453", "payer": WALLET.address}
        name = "PAYMENT-RESPONSE" if self.version == 2 else "X-PAYMENT-RESPONSE"
        return httpx.Response(200, headers={name: b64(settled)}, content=b"paid content: " + request.content)

    def verify(self, payload: dict[str, Any]) -> None:
        authorization = payload["payload"]["authorization"]
        if self.version == 2:
            assert payload["accepted"] == self.accepts[0]
            assert payload["extensions"] == {"bazaar": {"info": {"a": 1}, "schema": {}}}
        message = {
            **authorization,
            "value": int(authorization["value"]),
            "validAfter": int(authorization["validAfter"]),
        }
        message["validBefore"] = int(authorization["validBefore"])
        typed = transfer_with_authorization(
            token_name="USD Coin", token_version="2", chain_id=8453, token=USDC, authorization=message
        )
        signer = Account.recover_message(
            encode_typed_data(full_message=typed), signature=payload["payload"]["signature"]
        )
        assert signer == WALLET.address == authorization["from"]
        assert authorization["to"] == PAYEE
        assert authorization["value"] == "10000"


def client(peer: Callable[[httpx.Request], httpx.Response], **policy: Any) -> httpx.Client:
    transport = PaymentTransport(
        wallet=WALLET,
        policy=SpendPolicy(max_per_request=policy.pop("cap", 50_000), **policy),
        inner=httpx.MockTransport(peer),
        clock=lambda: NOW,
    )
    return httpx.Client(transport=transport)


@pytest.mark.parametrize("version", [1, 2])
def test_pays_a_challenge_once_and_reports_the_payment(version: int) -> None:
    peer = FakePeer(version)
    with client(peer) as http:
        response = http.post("https://paid.example/data", content=b"question")
    assert response.status_code == 200
    assert response.content == b"paid content: question"
    assert len(peer.requests) == 2
    payment = payment_of(response)
    assert payment is not None
    assert payment.status is PaymentStatus.SETTLED
    assert payment.signed_amount == payment.settled_amount == 10000
    assert payment.transaction == "0x" + "ab" * 32
    assert payment.payer == WALLET.address
    assert payment.origin == "https://paid.example"
    assert payment.x402_version == version
    assert payment.signed.valid_before == NOW + 60


def test_the_retry_replays_a_generator_body_byte_for_byte() -> None:
    peer = FakePeer()

    def body() -> Any:
        yield b"part one, "
        yield b"part two"

    with client(peer) as http:
        response = http.post("https://paid.example/data", content=body())
    assert response.content == b"paid content: part one, part two"
    first, second = peer.requests
    assert first.content == second.content == b"part one, part two"
    assert first.headers.get("transfer-encoding") == second.headers.get("transfer-encoding")
    assert second.method == "POST"


def test_unpaid_responses_pass_through_untouched() -> None:
    seen: list[httpx.Request] = []

    def free(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=b"free")

    with client(free) as http:
        response = http.get("https://free.example/")
    assert response.content == b"free"
    assert payment_of(response) is None
    assert len(seen) == 1


def test_a_402_that_is_not_x402_is_returned_as_is() -> None:
    def other(request: httpx.Request) -> httpx.Response:
        return httpx.Response(402, json={"message": "subscribe first"})

    with client(other) as http:
        response = http.get("https://other.example/")
    assert response.status_code == 402
    assert response.json() == {"message": "subscribe first"}


def test_over_the_cap_raises_before_anything_is_signed() -> None:
    peer = FakePeer()
    with client(peer, cap=9_999) as http, pytest.raises(SpendCapExceeded):
        http.get("https://paid.example/data")
    assert len(peer.requests) == 1  # nothing was retried, so nothing signed left the process


def test_a_second_402_is_a_rejection_with_the_reason_and_no_second_retry() -> None:
    peer = FakePeer()
    peer.reject_payment = "insufficient_funds"
    with client(peer) as http, pytest.raises(PaymentRejected, match="insufficient_funds") as caught:
        http.get("https://paid.example/data")
    assert caught.value.reason == "insufficient_funds"
    assert len(peer.requests) == 2


def test_a_malformed_challenge_is_a_challenge_error() -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        return httpx.Response(402, headers={"PAYMENT-REQUIRED": "%%%"})

    with client(broken) as http, pytest.raises(ChallengeError, match="not base64"):
        http.get("https://broken.example/")


def test_an_oversized_v1_body_is_refused_without_reading_it_all() -> None:
    def huge(request: httpx.Request) -> httpx.Response:
        chunks = (b"x" * 65536 for _ in range(1000))
        return httpx.Response(402, headers={"content-type": "application/json"}, content=chunks)

    with client(huge) as http, pytest.raises(ChallengeError, match="over the"):
        http.get("https://huge.example/")


def test_an_unreadable_settlement_header_keeps_the_paid_answer() -> None:
    def garbled(request: httpx.Request) -> httpx.Response:
        if "PAYMENT-SIGNATURE" not in request.headers:
            return FakePeer().challenge()
        return httpx.Response(200, headers={"PAYMENT-RESPONSE": "!!"}, content=b"the goods")

    with client(garbled) as http:
        response = http.get("https://paid.example/")
    payment = payment_of(response)
    assert response.content == b"the goods"
    assert payment is not None
    assert payment.status is PaymentStatus.UNSETTLED
    assert payment.settlement_error is not None
    assert "not base64" in payment.settlement_error


async def test_async_transport_pays_the_same_way() -> None:
    peer = FakePeer()

    async def handler(request: httpx.Request) -> httpx.Response:
        await request.aread()
        return peer(request)

    transport = AsyncPaymentTransport(
        wallet=WALLET, policy=SpendPolicy(max_per_request=50_000), inner=httpx.MockTransport(handler), clock=lambda: NOW
    )
    async with httpx.AsyncClient(transport=transport) as http:
        response = await http.post("https://paid.example/data", content=b"async question")
    assert response.content == b"paid content: async question"
    payment = x402pay.payment_of(response)
    assert payment is not None
    assert payment.status is PaymentStatus.SETTLED


def test_the_transport_repr_shows_no_key() -> None:
    transport = PaymentTransport(wallet=WALLET, policy=SpendPolicy(max_per_request=1))
    assert WALLET.address in repr(transport)
    assert KEY[2:] not in repr(transport).lower()


def test_a_sync_transport_refuses_an_async_ledger() -> None:
    ledger = AsyncLedger.__new__(AsyncLedger)  # never opened: the check looks at the type's methods
    with pytest.raises(TypeError, match="a sync transport needs a Ledger, not an AsyncLedger"):
        PaymentTransport(wallet=WALLET, policy=SpendPolicy(max_per_request=1), ledger=ledger)


async def test_the_async_transport_books_in_an_async_ledger_natively() -> None:
    ledger = await AsyncLedger.sqlite(":memory:")
    peer = FakePeer()

    async def handler(request: httpx.Request) -> httpx.Response:
        await request.aread()
        return peer(request)

    transport = AsyncPaymentTransport(
        wallet=WALLET, policy=SpendPolicy(max_per_request=50_000), inner=httpx.MockTransport(handler),
        clock=lambda: NOW, ledger=ledger,
    )  # fmt: skip
    async with httpx.AsyncClient(transport=transport) as http:
        response = await http.post("https://paid.example/data", headers={"Idempotency-Key": "a-1"}, content=b"q")
        again = await http.post("https://paid.example/data", headers={"Idempotency-Key": "a-1"}, content=b"q")
    payment, repeat = x402pay.payment_of(response), x402pay.payment_of(again)
    assert payment is not None
    assert repeat is not None
    assert repeat.signed.nonce == payment.signed.nonce  # the same payment, re-sent from the async ledger
    (entry,) = await ledger.entries()
    assert (entry.key, entry.state, entry.id) == ("a-1", "claimed", payment.ledger_entry)
    await ledger.aclose()


def test_a_redirect_after_payment_does_not_carry_the_payment_to_another_origin() -> None:
    peer = FakePeer()
    elsewhere: list[httpx.Request] = []

    def two_origins(request: httpx.Request) -> httpx.Response:
        if request.url.host == "elsewhere.example":
            elsewhere.append(request)
            return httpx.Response(200, content=b"moved content")
        answer = peer(request)
        if answer.status_code == 200:
            return httpx.Response(302, headers={**answer.headers, "location": "https://elsewhere.example/x"})
        return answer

    with client(two_origins) as http:
        response = http.get("https://paid.example/data", follow_redirects=True)
    assert response.content == b"moved content"
    paid_hop = payment_of(response)
    assert paid_hop is not None
    assert paid_hop.origin == "https://paid.example"
    assert len(elsewhere) == 1
    assert not {"payment-signature", "x-payment"} & set(elsewhere[0].headers.keys())
    assert len(peer.requests) == 2


class Tracked(httpx.SyncByteStream):
    """A response body that records how much of it was read and whether it was closed."""

    def __init__(self, body: bytes = b"x" * 1000) -> None:
        self.body = body
        self.read = 0
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        for start in range(0, len(self.body), 100):
            self.read += len(self.body[start : start + 100])
            yield self.body[start : start + 100]

    def close(self) -> None:
        self.closed = True


def test_a_402_with_a_malformed_challenge_is_closed() -> None:
    body = Tracked()
    peer = lambda _: httpx.Response(402, headers={"PAYMENT-REQUIRED": "%%%"}, stream=body)  # noqa: E731
    with client(peer) as http, pytest.raises(ChallengeError):
        http.get("https://paid.example/data")
    assert body.closed


def test_the_paid_answer_is_closed_when_its_receipt_contradicts_the_payment() -> None:
    peer, body = FakePeer(), Tracked()

    def lying(request: httpx.Request) -> httpx.Response:
        answer = peer(request)
        if "PAYMENT-SIGNATURE" not in request.headers:
            return answer
        claim = {"success": True, "transaction": "0x" + "ab" * 32, "network": "eip155:8453", "amount": "9999"}
        return httpx.Response(200, headers={"PAYMENT-RESPONSE": b64(claim)}, stream=body)

    with client(lying) as http, pytest.raises(ReceiptMismatch):
        http.get("https://paid.example/data")
    assert body.closed


def test_the_paid_answer_is_closed_when_the_ledger_fails_to_record_it() -> None:
    class BrokenDisk(Ledger):
        def claim(self, entry_id: str, *, amount: int, tx_hash: str | None) -> Any:
            raise LedgerError("disk full")

    peer, body = FakePeer(), Tracked()

    def answering(request: httpx.Request) -> httpx.Response:
        answer = peer(request)
        return answer if answer.status_code == 402 else httpx.Response(200, headers=answer.headers, stream=body)

    transport = PaymentTransport(
        wallet=WALLET, policy=SpendPolicy(max_per_request=50_000), inner=httpx.MockTransport(answering),
        clock=lambda: NOW, ledger=BrokenDisk(SQLiteDatabase(":memory:")),
    )  # fmt: skip
    with httpx.Client(transport=transport) as http, pytest.raises(LedgerError, match="disk full"):
        http.get("https://paid.example/data")
    assert body.closed


def test_a_refused_paid_402_is_drained_before_it_is_closed() -> None:
    peer, body = FakePeer(), Tracked()
    peer.reject_payment = "insufficient_funds"

    def refusing(request: httpx.Request) -> httpx.Response:
        answer = peer(request)
        if "PAYMENT-SIGNATURE" not in request.headers:
            return answer
        return httpx.Response(402, headers=answer.headers, stream=body)

    with client(refusing) as http, pytest.raises(PaymentRejected, match="insufficient_funds"):
        http.get("https://paid.example/data")
    assert (body.read, body.closed) == (len(body.body), True)  # read to its end: the connection can be reused


def test_a_failed_allowance_read_releases_the_reservation() -> None:
    permit2 = {**REQUIREMENT, "extra": {**REQUIREMENT["extra"], "assetTransferMethod": "permit2"}}
    peer = FakePeer(accepts=[permit2])
    ledger = Ledger.sqlite(":memory:")
    transport = PaymentTransport(
        wallet=WALLET, policy=SpendPolicy(max_per_request=50_000), inner=httpx.MockTransport(peer),
        ledger=ledger, rpc_url="http://127.0.0.1:1", rpc_timeout=2.0,  # nothing listens on port 1
    )  # fmt: skip
    with httpx.Client(transport=transport) as http, pytest.raises(ChainUnavailable):
        http.get("https://paid.example/data", headers={"Idempotency-Key": "allowance-1"})
    (entry,) = ledger.entries()
    assert (entry.state, entry.held) == ("released", 0)
    assert entry.detail == "never sent: ChainUnavailable"


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"verify": "Inline", "rpc_url": "http://127.0.0.1:8545"}, "verify='Inline' is not one of"),
        ({"verify": "inline"}, "needs rpc_url"),
        ({"confirmations": -1}, "confirmations=-1 is negative"),
        ({"prepay_ttl": "300"}, "prepay_ttl must be a number of seconds"),
        ({"presign": True}, "presign=True is only meaningful with prepay=True"),
        ({"prepay": True, "presign": "yes"}, "presign must be True or False"),
        ({"on_receipt": "print"}, "on_receipt must be a callable"),
        ({"ledger": "spend.db"}, "ledger must be an x402pay.ledger.Ledger"),
        ({"annouce_ceiling": False}, r"unknown transport option\(s\) \['annouce_ceiling'\]"),
        ({"reconcile_every": 60}, "reconcile_every needs a ledger"),
        ({"reconcile_every": 0, "rpc_url": "http://127.0.0.1:8545"}, "reconcile_every=0 is out of range"),
    ],
)
def test_bad_options_are_refused_when_the_transport_is_built(options: dict[str, Any], problem: str) -> None:
    for kind in (PaymentTransport, AsyncPaymentTransport):
        with pytest.raises((TypeError, ValueError), match=problem):
            kind(wallet=WALLET, policy=SpendPolicy(max_per_request=1), **options)


def test_a_policy_that_is_not_a_spend_policy_is_refused() -> None:
    with pytest.raises(TypeError, match=r"policy must be an x402pay\.SpendPolicy"):
        PaymentTransport(wallet=WALLET, policy={"max_per_request": 1})


async def test_a_signer_that_is_not_a_local_key_signs_off_the_event_loop() -> None:
    from eth_account.signers.local import LocalAccount

    threads: list[int] = []

    class RemoteSigner(LocalAccount):  # stands in for a KMS or hardware signer: any BaseAccount but a plain key
        def sign_message(self, signable_message: Any) -> Any:
            threads.append(threading.get_ident())
            return super().sign_message(signable_message)

    plain = Account.from_key(KEY)
    signer = RemoteSigner(plain._key_obj, Account)
    peer = FakePeer()

    async def handler(request: httpx.Request) -> httpx.Response:
        await request.aread()
        return peer(request)

    transport = AsyncPaymentTransport(
        wallet=signer, policy=SpendPolicy(max_per_request=50_000), inner=httpx.MockTransport(handler), clock=lambda: NOW
    )
    async with httpx.AsyncClient(transport=transport) as http:
        response = await http.post("https://paid.example/data", content=b"q")
    assert response.status_code == 200
    assert threads
    assert threading.get_ident() not in threads  # the loop's thread never waited on the signer


def test_a_pending_settlement_is_its_own_error_and_keeps_the_money_held() -> None:
    peer = FakePeer()
    pending_tx = "0x" + "cd" * 32

    def slow_chain(request: httpx.Request) -> httpx.Response:
        answer = peer(request)
        if "PAYMENT-SIGNATURE" not in request.headers:
            return answer
        pending = {"success": False, "errorReason": "settlement_pending", "transaction": pending_tx,
                   "network": "eip155:8453"}  # fmt: skip
        return httpx.Response(402, headers={"PAYMENT-RESPONSE": b64(pending)})

    ledger = Ledger.sqlite(":memory:")
    transport = PaymentTransport(
        wallet=WALLET, policy=SpendPolicy(max_per_request=50_000), inner=httpx.MockTransport(slow_chain),
        clock=lambda: NOW, ledger=ledger,
    )  # fmt: skip
    with httpx.Client(transport=transport) as http, pytest.raises(SettlementPending, match="you may be charged") as got:
        http.get("https://paid.example/data", headers={"Idempotency-Key": "slow-1"})
    assert not isinstance(got.value, PaymentRejected)  # not "refused, nothing moved"
    assert got.value.transaction == pending_tx
    assert got.value.payment.status is PaymentStatus.UNSETTLED
    (entry,) = ledger.entries()
    assert (entry.state, entry.held) == ("unknown", 10_000)
    assert entry.detail == f"settlement pending in {pending_tx}"


def test_only_the_budgets_that_apply_to_a_payment_can_refuse_it() -> None:
    peer = FakePeer()
    exhausted_elsewhere = Budget(USDC, 0, origin="https://other.example")  # another origin's budget: spent
    other_token = Budget("0x" + "ee" * 20, 0)  # another asset's budget: spent
    ledger = Ledger.sqlite(":memory:", budgets=[exhausted_elsewhere, other_token, Budget(USDC, 20_000)])
    transport = PaymentTransport(
        wallet=WALLET, policy=SpendPolicy(max_per_request=50_000), inner=httpx.MockTransport(peer),
        clock=lambda: NOW, ledger=ledger,
    )  # fmt: skip
    with httpx.Client(transport=transport) as http:
        assert http.get("https://paid.example/data").status_code == 200
        assert http.get("https://paid.example/data").status_code == 200
        with pytest.raises(BudgetExceeded, match="only 0 of 20000 left"):  # the one that applies, when it is spent
            http.get("https://paid.example/data")


def test_with_budgets_the_option_a_budget_covers_is_paid_and_none_covered_is_refused_unsigned() -> None:
    mainnet = {**REQUIREMENT, "network": "eip155:1", "asset": "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48",
               "amount": "5000"}  # fmt: skip
    peer = FakePeer(accepts=[REQUIREMENT, mainnet])  # mainnet is cheaper, but only Base's USDC has a budget
    ledger = Ledger.sqlite(":memory:", budgets=[Budget(ANY_USDC, 50_000, network="eip155:8453")])
    transport = PaymentTransport(
        wallet=WALLET, policy=SpendPolicy(max_per_request=50_000), inner=httpx.MockTransport(peer),
        clock=lambda: NOW, ledger=ledger,
    )  # fmt: skip
    with httpx.Client(transport=transport) as http:
        paid = payment_of(http.get("https://paid.example/data"))
        assert paid is not None
        assert paid.signed.requirement.network == "eip155:8453"
        peer.accepts = [mainnet]
        with pytest.raises(NotBudgeted, match=r"option 0: no budget covers asset 0xA0b86991.* on eip155:1"):
            http.get("https://paid.example/data")
    assert "PAYMENT-SIGNATURE" not in peer.requests[-1].headers
    assert [entry.network for entry in ledger.entries()] == ["eip155:8453"]


async def test_with_budgets_the_async_transport_pays_the_option_a_budget_covers_and_refuses_the_rest() -> None:
    mainnet = {**REQUIREMENT, "network": "eip155:1", "asset": "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48",
               "amount": "5000"}  # fmt: skip
    peer = FakePeer(accepts=[REQUIREMENT, mainnet])
    ledger = await AsyncLedger.sqlite(":memory:", budgets=[Budget(ANY_USDC, 50_000, network="eip155:8453")])

    async def handler(request: httpx.Request) -> httpx.Response:
        await request.aread()
        return peer(request)

    transport = AsyncPaymentTransport(
        wallet=WALLET, policy=SpendPolicy(max_per_request=50_000), inner=httpx.MockTransport(handler),
        clock=lambda: NOW, ledger=ledger,
    )  # fmt: skip
    async with httpx.AsyncClient(transport=transport) as http:
        paid = payment_of(await http.get("https://paid.example/data"))
        assert paid is not None
        assert paid.signed.requirement.network == "eip155:8453"
        peer.accepts = [mainnet]
        with pytest.raises(NotBudgeted):
            await http.get("https://paid.example/data")
    assert "PAYMENT-SIGNATURE" not in peer.requests[-1].headers
    await ledger.aclose()


def test_a_stored_payment_is_re_sent_with_the_ceiling_it_was_signed_under() -> None:
    """A metered server rebuilds its terms from x-x402-max-amount-wei: a re-send must carry the signed-under value,
    whatever the ceiling of the process that re-sends it (here a restarted bot with a lower cap)."""
    peer = FakePeer()
    seen: list[httpx.Request] = []

    def drops_the_first_answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = peer(request)
        if "PAYMENT-SIGNATURE" in request.headers and len(seen) == 2:
            raise httpx.ReadError("connection reset after the payment arrived")
        return answer

    ledger = Ledger.sqlite(":memory:")
    for cap, fails in ((50_000, True), (40_000, False)):  # the second transport is the bot after a restart
        transport = PaymentTransport(
            wallet=WALLET, policy=SpendPolicy(max_per_request=cap), inner=httpx.MockTransport(drops_the_first_answer),
            clock=lambda: NOW, ledger=ledger,
        )  # fmt: skip
        with httpx.Client(transport=transport) as http:
            if fails:
                with pytest.raises(httpx.ReadError):
                    http.get("https://paid.example/data", headers={"Idempotency-Key": "order-7"})
            else:
                assert http.get("https://paid.example/data", headers={"Idempotency-Key": "order-7"}).status_code == 200
    first, resent = seen[1], seen[2]
    assert resent.headers["PAYMENT-SIGNATURE"] == first.headers["PAYMENT-SIGNATURE"]  # never signed again
    assert resent.headers["x-x402-max-amount-wei"] == first.headers["x-x402-max-amount-wei"] == "50000"


def test_a_retry_takes_over_the_reservation_of_a_bot_that_died_before_signing() -> None:
    import socket

    from x402pay.ledger._sql import Program, Query

    def dead_holder(entry_id: str) -> Program[None]:  # a pid above any pid_max: that process cannot exist
        yield Query(
            "UPDATE x402pay_entries SET holder = ? WHERE id = ?", (f"{socket.gethostname()}/99999999/1", entry_id)
        )

    ledger = Ledger.sqlite(":memory:")
    orphan = ledger.reserve("order-9", origin="https://paid.example", asset=USDC, network="eip155:8453",
                            amount=10_000, pay_to=PAYEE)  # fmt: skip
    ledger._db.run(dead_holder(orphan.id), write=True)
    transport = PaymentTransport(
        wallet=WALLET, policy=SpendPolicy(max_per_request=50_000), inner=httpx.MockTransport(FakePeer()),
        clock=lambda: NOW, ledger=ledger,
    )  # fmt: skip
    with httpx.Client(transport=transport) as http:
        response = http.get("https://paid.example/data", headers={"Idempotency-Key": "order-9"})
    assert response.status_code == 200  # at once, not PaymentInFlight for ten minutes
    assert ledger.get(orphan.id).state == "released"
    assert x402pay.payment_of(response).ledger_entry != orphan.id


def test_an_origin_the_policy_would_never_pay_gets_neither_the_ceiling_nor_the_key() -> None:
    received: dict[str, list[httpx.Headers]] = {}
    peer = FakePeer()

    def two_origins(request: httpx.Request) -> httpx.Response:
        received.setdefault(request.url.host, []).append(request.headers)
        return peer(request) if request.url.host == "paid.example" else httpx.Response(200, content=b"free")

    policy = SpendPolicy(max_per_request=50_000, origins={"https://paid.example"})
    transport = PaymentTransport(
        wallet=WALLET, policy=policy, inner=httpx.MockTransport(two_origins), clock=lambda: NOW
    )
    with httpx.Client(transport=transport) as http:
        assert http.get("https://other.example/page").status_code == 200
        assert http.get("https://paid.example/data").status_code == 200
    (elsewhere,) = received["other.example"]
    assert "x-x402-max-amount-wei" not in elsewhere
    assert "idempotency-key" not in elsewhere
    assert all("x-x402-max-amount-wei" in headers for headers in received["paid.example"])


def test_an_anthropic_error_event_mid_stream_reaches_the_sdk_untouched() -> None:
    peer = FakePeer()
    overloaded = b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
    stream = b'event: message_start\ndata: {"type":"message_start"}\n\n' + overloaded

    def anthropic_like(request: httpx.Request) -> httpx.Response:
        answer = peer(request)
        if answer.status_code == 402:
            return answer
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=stream)

    with client(anthropic_like) as http, http.stream("GET", "https://paid.example/v1/messages") as response:
        body = b"".join(response.iter_bytes())  # no SettlementFailed: the error is Anthropic's, not the paid API's
    assert body == stream
    payment = payment_of(response)
    assert payment is not None
    assert payment.status is PaymentStatus.UNSETTLED  # no receipt: the whole maximum is still at stake
    assert payment.settlement_error is None
