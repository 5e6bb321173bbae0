"""The benchmark stub server's payment check: it must accept exactly what a real facilitator's signature check
would (otherwise the benchmark would time a client whose payments a real server refuses)."""

from __future__ import annotations

import base64
import json
import time

from eth_account import Account

from bench.stub_server import REQUIREMENT, payer_of
from x402pay import Wallet
from x402pay._protocol.models import PaymentRequirements
from x402pay._schemes.exact import sign_exact


def header(wallet: Wallet, **changes: str) -> bytes:
    signed = sign_exact(wallet, PaymentRequirements.model_validate(REQUIREMENT), now=int(time.time()), max_lifetime=60)
    payload = json.loads(json.dumps(signed.payload))
    payload["authorization"].update(changes)
    return base64.b64encode(json.dumps({"x402Version": 2, "accepted": REQUIREMENT, "payload": payload}).encode())


def test_a_signed_payment_recovers_to_its_payer() -> None:
    wallet = Wallet(Account.create())
    assert payer_of(header(wallet)) == wallet.address.lower()


def test_a_payment_altered_after_signing_is_refused() -> None:
    wallet = Wallet(Account.create())
    assert payer_of(header(wallet, validBefore=str(int(time.time()) + 3600))) is None
    assert payer_of(header(wallet, **{"from": Account.create().address})) is None


def test_garbage_is_refused_without_raising() -> None:
    assert payer_of(b"not base64!") is None
    assert payer_of(base64.b64encode(b'{"x402Version": 2}')) is None
