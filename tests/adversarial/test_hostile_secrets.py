"""Secrets stay secret under DEBUG logging: the key, the keystore password and full signatures appear nowhere in
logs, reprs or exception messages, even when a hostile server makes the client fail."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import pytest
from eth_account import Account
from hostile_support import (
    Call,
    Hostile,
    Reply,
    challenge,
    challenge_reply,
    challenge_then,
    client,
    policy,
    requirement,
    settle_honestly,
    settled_header,
    sse,
    unb64,
)

from x402pay import (
    OriginUntrusted,
    PaymentRejected,
    PaymentTransport,
    ReceiptMismatch,
    SettlementFailed,
    Wallet,
    payment_of,
)
from x402pay.ledger import Ledger

pytestmark = pytest.mark.chain

PASSWORD = "correct horse battery staple 402"


def test_no_key_password_or_signature_leaks_into_logs_reprs_or_errors(
    hostile: Hostile, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    account = hostile.devnet.payers[1]
    key_hex = bytes(account.key).hex()
    keystore = tmp_path / "key.json"
    keystore.write_text(json.dumps(Account.encrypt(account.key, PASSWORD, kdf="pbkdf2", iterations=2)))
    caplog.set_level(logging.DEBUG)
    wallet = Wallet.from_keystore(keystore, PASSWORD)
    texts: list[str] = [repr(wallet), str(wallet)]

    def lies(call: Call) -> Reply:
        settlement = call.settle()
        return Reply(200, [settled_header(settlement, amount="999999999")], b"paid")

    transport = PaymentTransport(wallet=wallet, policy=policy(hostile.devnet), rpc_url=hostile.devnet.rpc_url)
    with httpx.Client(transport=transport, timeout=60) as http:
        hostile.script = challenge_then(challenge_reply(challenge(requirement(hostile.devnet))), settle_honestly)
        honest = http.get(hostile.url + "/report")
        texts += [repr(transport), repr(payment_of(honest))]
        assert payment_of(honest) is not None
        hostile.script = challenge_then(challenge_reply(challenge(requirement(hostile.devnet))), lies)
        with pytest.raises(ReceiptMismatch) as caught:
            http.get(hostile.url + "/report")
        texts += [str(caught.value), repr(caught.value)]
        with pytest.raises(OriginUntrusted) as untrusted:
            http.get(hostile.url + "/report")
        texts += [str(untrusted.value)]

    texts += [record.getMessage() for record in caplog.records]
    texts += [str(record.args) for record in caplog.records]
    texts += [str(value) for record in caplog.records for value in vars(record).values()]  # the extra= fields too
    signatures = [unb64(header)["payload"]["signature"] for header in hostile.signatures]
    assert len(signatures) == 2
    assert any("x402pay" in record.name for record in caplog.records)  # DEBUG logging did say things
    assert any(getattr(record, "x402pay_event", None) == "signed" for record in caplog.records)
    everything = "\n".join(texts).lower()
    assert key_hex.lower() not in everything
    assert PASSWORD.lower() not in everything
    for signature in signatures:
        leaks = [text for text in texts if signature.lower().removeprefix("0x") in text.lower()]
        assert leaks == []


def test_the_repr_of_a_payment_shows_no_full_signature(hostile: Hostile) -> None:
    hostile.script = challenge_then(challenge_reply(challenge(requirement(hostile.devnet))), settle_honestly)
    transport = PaymentTransport(wallet=Wallet(hostile.devnet.payers[1]), policy=policy(hostile.devnet))
    with httpx.Client(transport=transport, timeout=60) as http:
        payment = payment_of(http.get(hostile.url + "/report"))

    (header,) = hostile.signatures
    signature = unb64(header)["payload"]["signature"]
    assert signature.removeprefix("0x") not in repr(payment)


def echoes(call: Call) -> str:
    """What a hostile server says back: the payment's signature, then its whole header."""
    return f"bad signature {call.payload().payload['signature']} in {call.seen.payment}"


def assert_no_record_holds_the_payment(hostile: Hostile, caplog: pytest.LogCaptureFixture, event: str) -> None:
    (header,) = hostile.signatures
    signature = unb64(header)["payload"]["signature"].removeprefix("0x").lower()
    assert any(getattr(record, "x402pay_event", None) == event for record in caplog.records)
    for record in caplog.records:
        text = " ".join([record.getMessage(), *map(str, vars(record).values())]).lower()
        assert signature not in text
        assert header.lower() not in text


def test_a_refusal_that_echoes_the_signature_gets_it_into_no_log_record(
    hostile: Hostile, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    def refusal(call: Call) -> Reply:
        return challenge_reply(challenge(requirement(hostile.devnet), error=echoes(call)))

    hostile.script = challenge_then(challenge_reply(challenge(requirement(hostile.devnet))), refusal)
    with client(hostile.devnet) as http, pytest.raises(PaymentRejected):
        http.get(hostile.url + "/report")
    assert_no_record_holds_the_payment(hostile, caplog, "refused")


def test_an_error_frame_that_echoes_the_signature_gets_it_into_no_log_record(
    hostile: Hostile, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)

    def failing(call: Call) -> Reply:  # the message alone: nothing of ours in front of it to push it past a cut
        frame = sse("compose.error", {"error": {"code": "settle_failed", "message": echoes(call).split()[2]}})
        return Reply(200, [("content-type", "text/event-stream")], [frame])

    hostile.script = challenge_then(challenge_reply(challenge(requirement(hostile.devnet))), failing)
    ledger = Ledger.sqlite(tmp_path / "spend.db")
    with (
        client(hostile.devnet, ledger=ledger) as http,
        http.stream("GET", hostile.url + "/report") as response,
        pytest.raises(SettlementFailed),
    ):
        response.read()
    assert_no_record_holds_the_payment(hostile, caplog, "unsettled")
