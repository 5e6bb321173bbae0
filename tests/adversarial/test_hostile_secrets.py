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
    policy,
    requirement,
    settle_honestly,
    settled_header,
    unb64,
)

from x402pay import OriginUntrusted, PaymentTransport, ReceiptMismatch, Wallet, payment_of

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
    signatures = [unb64(header)["payload"]["signature"] for header in hostile.signatures]
    assert len(signatures) == 2
    assert any("x402pay" in record.name for record in caplog.records)  # DEBUG logging did say things
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
