"""PaymentMiddleware + LocalFacilitator on anvil, exact prices: a real uvicorn server, real signatures."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from eth_account import Account
from paid_app import PRICE, PaidServer
from server_support import decode, eip3009_payload, header, now, permit2_payload

pytestmark = pytest.mark.chain


def challenge_of(server: PaidServer, path: str, **kwargs: Any) -> dict[str, Any]:
    response = server.client.get(path, **kwargs)
    assert response.status_code == 402
    return decode(response.headers["payment-required"])


def pay(
    server: PaidServer, path: str, build: Callable[[dict[str, Any]], dict[str, Any]], name: str = "PAYMENT-SIGNATURE"
) -> httpx.Response:
    requirement = challenge_of(server, path)["accepts"][0]
    return server.client.get(path, headers={name: header(build(requirement))})


def test_an_unpaid_request_gets_a_v2_challenge_in_the_header_and_the_body(server: PaidServer) -> None:
    response = server.client.get("/paid")
    assert response.status_code == 402
    assert response.headers["cache-control"] == "no-store"
    challenge = decode(response.headers["payment-required"])
    assert response.json() == challenge
    assert challenge["x402Version"] == 2
    assert challenge["resource"] == {"url": server.url + "/paid", "description": "a paid report"}
    devnet = server.devnet
    assert challenge["accepts"] == [
        {
            "scheme": "exact",
            "network": devnet.network,
            "amount": str(PRICE),
            "asset": devnet.usdc,
            "payTo": devnet.payee.address,
            "maxTimeoutSeconds": 60,
            "extra": {"name": "USD Coin", "version": "2"},
        }
    ]
    assert server.probe.calls == []


def test_a_free_route_needs_no_payment(server: PaidServer) -> None:
    assert server.client.get("/free").json() == {"free": True}


@pytest.mark.parametrize("version", [2, 1])
def test_a_paid_request_settles_exactly_the_price(server: PaidServer, version: int) -> None:
    devnet, payer = server.devnet, server.devnet.payers[0]
    before = server.balance(devnet.payee.address), server.balance(payer.address)
    name = "PAYMENT-SIGNATURE" if version == 2 else "X-PAYMENT"

    response = pay(server, "/paid", lambda req: eip3009_payload(devnet, payer, req, version=version), name)

    assert response.status_code == 200, response.text
    assert response.json() == {"report": "the good stuff"}
    settlement = decode(response.headers["payment-response" if version == 2 else "x-payment-response"])
    assert settlement["success"] is True
    assert settlement["payer"] == payer.address
    assert settlement["network"] == devnet.network
    assert server.balance(devnet.payee.address) == before[0] + PRICE
    assert server.balance(payer.address) == before[1] - PRICE
    receipt = devnet.web3().eth.get_transaction_receipt(settlement["transaction"])
    assert receipt["status"] == 1
    assert response.headers["x-transaction-hash"] == settlement["transaction"]
    assert response.headers["cache-control"] == "private"  # never to be served from a shared cache
    compose = decode(response.headers["x-receipt"])
    assert (compose["finalAmountWei"], compose["txHash"]) == (str(PRICE), settlement["transaction"])
    assert server.probe.calls == ["/paid"]


def test_permit2_exact_settles_through_the_proxy(server: PaidServer) -> None:
    devnet, payer = server.devnet, server.devnet.payers[1]
    before = server.balance(devnet.payee.address)
    response = pay(server, "/paid-permit2", lambda req: permit2_payload(devnet, payer, req))
    assert response.status_code == 200, response.text
    assert decode(response.headers["payment-response"])["success"] is True
    assert server.balance(devnet.payee.address) == before + PRICE


STRANGER = Account.create()


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        ({"value": PRICE - 1}, "invalid_exact_evm_payload_authorization_value_mismatch"),
        ({"value": PRICE + 1}, "invalid_exact_evm_payload_authorization_value_mismatch"),
        ({"to": STRANGER.address}, "invalid_exact_evm_payload_recipient_mismatch"),
        ({"validBefore": "expired"}, "invalid_exact_evm_payload_authorization_valid_before"),
        ({"validAfter": "future"}, "invalid_exact_evm_payload_authorization_valid_after"),
        ({"signer": STRANGER}, "invalid_exact_evm_payload_signature"),
        ({"from": STRANGER}, "insufficient_funds"),
    ],
    ids=["amount-low", "amount-high", "recipient", "expired", "not-yet-valid", "signature", "balance"],
)
def test_a_bad_exact_payment_is_refused_before_the_app_runs(
    server: PaidServer, tamper: dict[str, Any], reason: str
) -> None:
    devnet = server.devnet
    payer = tamper.pop("from", devnet.payers[0])
    start = now(devnet)
    if tamper.get("validBefore") == "expired":
        tamper["validBefore"] = start + 3
    if tamper.get("validAfter") == "future":
        tamper["validAfter"] = start + 120
    before = server.balance(devnet.payee.address)

    response = pay(server, "/paid", lambda req: eip3009_payload(devnet, payer, req, **tamper))

    assert response.status_code == 402
    assert response.json()["error"] == reason
    assert decode(response.headers["payment-required"])["error"] == reason
    assert server.probe.calls == []
    assert server.balance(devnet.payee.address) == before


def test_a_replayed_payment_is_refused(server: PaidServer) -> None:
    devnet, payer = server.devnet, server.devnet.payers[0]
    requirement = challenge_of(server, "/paid")["accepts"][0]
    payment = {"PAYMENT-SIGNATURE": header(eip3009_payload(devnet, payer, requirement))}
    before = server.balance(devnet.payee.address)
    assert server.client.get("/paid", headers=payment).status_code == 200

    replay = server.client.get("/paid", headers=payment)

    assert replay.status_code == 402
    assert replay.json()["error"] == "invalid_exact_evm_nonce_already_used"
    assert server.balance(devnet.payee.address) == before + PRICE
    assert server.probe.calls == ["/paid"]


def test_permit2_without_allowance_is_refused(server: PaidServer) -> None:
    devnet, payer = server.devnet, server.devnet.payers[2]
    usdc = devnet.contract("TestUSDC", devnet.usdc)
    tx = usdc.functions.approve(devnet.permit2, 0).transact({"from": payer.address})
    devnet.web3().eth.wait_for_transaction_receipt(tx)
    response = pay(server, "/paid-permit2", lambda req: permit2_payload(devnet, payer, req))
    assert response.status_code == 402
    assert response.json()["error"] == "permit2_allowance_required"
    assert server.probe.calls == []


@pytest.mark.parametrize(
    "value",
    ["not base64 at all!", header({"x402Version": 2})[:-4] + "@@@@", "bm90IGpzb24", header({"x402Version": 2})],
    ids=["bad-base64", "bad-characters", "bad-json", "not-a-payload"],
)
@pytest.mark.parametrize("name", ["PAYMENT-SIGNATURE", "X-PAYMENT"])
def test_a_malformed_payment_header_is_a_402_with_a_fresh_challenge(server: PaidServer, value: str, name: str) -> None:
    response = server.client.get("/paid", headers={name: value})
    assert response.status_code == 402  # as the official servers answer: their clients know only the 402
    assert response.json()["error"] == "invalid_payload"
    challenge = decode(response.headers["payment-required"])
    assert (challenge["error"], challenge["accepts"][0]["amount"]) == ("invalid_payload", str(PRICE))
    assert response.headers["cache-control"] == "no-store"
    assert server.probe.calls == []


@pytest.mark.parametrize("name", ["PAYMENT-SIGNATURE", "X-PAYMENT"])
def test_an_empty_payment_header_is_no_payment(server: PaidServer, name: str) -> None:
    response = server.client.get("/paid", headers={name: ""})
    assert response.status_code == 402
    assert response.json()["error"] == "PAYMENT-SIGNATURE header is required"
    assert response.headers["cache-control"] == "no-store"
    assert server.probe.calls == []


def test_an_app_error_charges_nothing_and_the_payment_can_be_presented_again(server: PaidServer) -> None:
    devnet, payer = server.devnet, server.devnet.payers[0]
    requirement = challenge_of(server, "/broken")["accepts"][0]
    payment = {"PAYMENT-SIGNATURE": header(eip3009_payload(devnet, payer, requirement))}
    before = server.balance(devnet.payee.address)
    for _ in range(2):
        response = server.client.get("/broken", headers=payment)
        assert response.status_code == 500
        assert "payment-response" not in response.headers
    assert server.probe.calls == ["/broken", "/broken"]
    assert server.balance(devnet.payee.address) == before
