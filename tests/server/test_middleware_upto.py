"""PaymentMiddleware on anvil, upto prices and SSE streams: metered charges, in-band receipts, streaming."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from eth_account import Account
from paid_app import PRICE, UPTO_MAX, PaidServer
from server_support import decode, eip3009_payload, header, permit2_payload

pytestmark = pytest.mark.chain


def upto_requirement(server: PaidServer, path: str, ceiling: str | None = None) -> dict[str, Any]:
    headers = {"x-x402-max-amount-wei": ceiling} if ceiling else {}
    response = server.client.post(path, json={"use": 0}, headers=headers)
    assert response.status_code == 402
    [requirement] = decode(response.headers["payment-required"])["accepts"]
    return requirement


def paid_post(server: PaidServer, path: str, body: dict[str, Any], requirement: dict[str, Any], **kw: Any) -> Any:
    """Pay `requirement` and send `body`, with the same x-x402-max-amount-wei as the challenge (the amount)."""
    payment = header(permit2_payload(server.devnet, server.devnet.payers[0], requirement, **kw))
    headers = {"PAYMENT-SIGNATURE": payment, "x-x402-max-amount-wei": requirement["amount"]}
    return server.client.post(path, json=body, headers=headers)


def sse_frames(text: str) -> list[str]:
    return [frame for frame in text.split("\n\n") if frame]


@pytest.mark.parametrize(
    ("ceiling", "expected"),
    [(None, UPTO_MAX), ("20000", 20_000), (str(UPTO_MAX * 2), UPTO_MAX), ("0", UPTO_MAX), ("-5", UPTO_MAX)],
)
def test_the_upto_challenge_honours_the_client_ceiling(server: PaidServer, ceiling: str | None, expected: int) -> None:
    requirement = upto_requirement(server, "/metered", ceiling)
    devnet = server.devnet
    assert requirement == {
        "scheme": "upto",
        "network": devnet.network,
        "amount": str(expected),
        "asset": devnet.usdc,
        "payTo": devnet.payee.address,
        "maxTimeoutSeconds": 300,
        "extra": {
            "name": "USD Coin",
            "version": "2",
            "assetTransferMethod": "permit2",
            "facilitatorAddress": devnet.facilitator.address,
        },
    }


def test_upto_charges_what_the_app_metered(server: PaidServer) -> None:
    devnet = server.devnet
    before = server.balance(devnet.payee.address)
    response = paid_post(server, "/metered", {"use": 1234}, upto_requirement(server, "/metered"))
    assert response.status_code == 200, response.text
    settlement = decode(response.headers["payment-response"])
    assert (settlement["success"], settlement["amount"]) == (True, "1234")
    assert server.balance(devnet.payee.address) == before + 1234
    receipt = decode(response.headers["x-receipt"])
    assert receipt["finalAmountWei"] == "1234"
    assert receipt["txHash"] == settlement["transaction"]
    assert receipt["subject"] == "fake-model"
    assert receipt["lineItems"] == [
        {"key": "output_tokens", "unit": "tokens", "quantity": 1234, "unitPriceUsd": 0.000001, "amountWei": "1234"}
    ]


def test_a_settlement_overrides_header_sets_the_amount_and_is_stripped(server: PaidServer) -> None:
    before = server.balance(server.devnet.payee.address)
    requirement = upto_requirement(server, "/metered-by-header", "30000")
    response = paid_post(server, "/metered-by-header", {"use": 777}, requirement)
    assert response.status_code == 200, response.text
    assert "settlement-overrides" not in response.headers
    assert decode(response.headers["payment-response"])["amount"] == "777"
    assert server.balance(server.devnet.payee.address) == before + 777


def test_a_zero_charge_settles_off_chain_and_cannot_be_presented_again(server: PaidServer) -> None:
    devnet = server.devnet
    before = server.balance(devnet.payee.address)
    requirement = upto_requirement(server, "/metered")
    payment = {"PAYMENT-SIGNATURE": header(permit2_payload(devnet, devnet.payers[0], requirement))}
    response = server.client.post("/metered", json={"use": 0}, headers=payment)
    assert response.status_code == 200, response.text
    assert decode(response.headers["payment-response"]) == {
        "success": True,
        "transaction": "",
        "network": devnet.network,
        "payer": devnet.payers[0].address,
        "amount": "0",
    }
    assert "txHash" not in decode(response.headers["x-receipt"])
    replay = server.client.post("/metered", json={"use": 100}, headers=payment)
    assert (replay.status_code, replay.json()["error"]) == (402, "permit2_invalid_nonce")
    assert server.balance(devnet.payee.address) == before


def test_charging_more_than_the_signed_maximum_fails_settlement(server: PaidServer) -> None:
    before = server.balance(server.devnet.payee.address)
    requirement = upto_requirement(server, "/metered-by-header", "1000")
    response = paid_post(server, "/metered-by-header", {"use": 1001}, requirement)
    assert response.status_code == 402
    settlement = decode(response.headers["payment-response"])
    assert settlement["success"] is False
    assert settlement["errorReason"] == "invalid_upto_evm_payload_settlement_exceeds_amount"
    assert "used" not in response.text
    assert server.balance(server.devnet.payee.address) == before


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        ({"facilitator": Account.create().address}, "upto_facilitator_mismatch"),
        ({"amount": UPTO_MAX - 1}, "permit2_amount_mismatch"),
        ({"to": Account.create().address}, "invalid_permit2_recipient_mismatch"),
        ({"spender": "0x402085c248EeA27D92E8b30b2C58ed07f9E20001"}, "invalid_permit2_spender"),
        ({"signer": Account.create()}, "invalid_permit2_signature"),
    ],
    ids=["facilitator", "amount", "recipient", "spender", "signature"],
)
def test_a_bad_upto_payment_is_refused(server: PaidServer, tamper: dict[str, Any], reason: str) -> None:
    response = paid_post(server, "/metered", {"use": 1}, upto_requirement(server, "/metered"), **tamper)
    assert response.status_code == 402
    assert response.json()["error"] == reason
    assert server.probe.calls == []


def test_a_retry_with_another_ceiling_does_not_match_the_signed_amount(server: PaidServer) -> None:
    requirement = upto_requirement(server, "/metered", "20000")
    payment = header(permit2_payload(server.devnet, server.devnet.payers[0], requirement))
    response = server.client.post("/metered", json={"use": 1}, headers={"PAYMENT-SIGNATURE": payment})
    assert (response.status_code, response.json()["error"]) == (402, "permit2_amount_mismatch")


def test_a_stream_carries_the_receipt_before_done(server: PaidServer) -> None:
    devnet = server.devnet
    before = server.balance(devnet.payee.address)
    response = paid_post(server, "/stream", {"use": 4321}, upto_requirement(server, "/stream"))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "private"
    assert "payment-response" not in response.headers
    frames = sse_frames(response.text)
    assert frames[:2] == ['data: {"n":1}', 'data: {"n":2}']
    assert frames[3] == "data: [DONE]"
    event, data = frames[2].split("\n")
    assert event == "event: compose.receipt"
    receipt = json.loads(data.removeprefix("data: "))
    assert receipt["finalAmountWei"] == "4321"
    assert receipt["network"] == devnet.network
    assert isinstance(receipt["settledAt"], int)
    assert receipt["settledAt"] > 1_600_000_000_000
    assert devnet.web3().eth.get_transaction_receipt(receipt["txHash"])["status"] == 1
    assert server.balance(devnet.payee.address) == before + 4321


def test_an_exact_stream_also_gets_an_in_band_receipt(server: PaidServer) -> None:
    devnet = server.devnet
    challenge = server.client.post("/stream-exact", json={})
    requirement = decode(challenge.headers["payment-required"])["accepts"][0]
    payment = header(eip3009_payload(devnet, devnet.payers[0], requirement))
    response = server.client.post("/stream-exact", json={}, headers={"PAYMENT-SIGNATURE": payment})
    frames = sse_frames(response.text)
    assert frames[2].startswith("event: compose.receipt\n")
    assert json.loads(frames[2].split("data: ", 1)[1])["finalAmountWei"] == str(PRICE)
    assert frames[3] == "data: [DONE]"


def test_a_failed_stream_settlement_is_a_compose_error_before_done(server: PaidServer) -> None:
    devnet = server.devnet
    requirement = upto_requirement(server, "/stream")
    payer = devnet.payers[0]
    payment = header(permit2_payload(devnet, payer, requirement))
    # The payer spends its USDC while the stream runs: settlement must fail after the content went out.
    with server.client.stream(
        "POST", "/stream", json={"use": 10, "wait": True}, headers={"PAYMENT-SIGNATURE": payment}
    ) as response:
        chunks = response.iter_text()
        assert next(chunks).startswith('data: {"n":1}')
        usdc = devnet.contract("TestUSDC", devnet.usdc)
        balance = usdc.functions.balanceOf(payer.address).call()
        tx = usdc.functions.transfer(devnet.deployer.address, balance).transact({"from": payer.address})
        devnet.web3().eth.wait_for_transaction_receipt(tx)
        server.probe.gate.set()
        rest = "".join(chunks)
    frames = sse_frames(rest)
    assert frames[-1] == "data: [DONE]"
    event, data = frames[-2].split("\n")
    assert event == "event: compose.error"
    error = json.loads(data.removeprefix("data: "))
    assert error["code"] == "upstream_error"
    assert error["details"]["errorReason"] == "permit2_insufficient_balance"


def test_streaming_stays_streaming(server: PaidServer) -> None:
    requirement = upto_requirement(server, "/stream")
    payment = header(permit2_payload(server.devnet, server.devnet.payers[0], requirement))
    with server.client.stream(
        "POST", "/stream", json={"use": 5, "wait": True}, headers={"PAYMENT-SIGNATURE": payment}
    ) as response:
        chunks = response.iter_text()
        # The app is blocked on the gate until this first frame has arrived: it cannot have been buffered.
        assert next(chunks) == 'data: {"n":1}\n\n'
        assert not server.probe.gate.is_set()
        server.probe.gate.set()
        rest = "".join(chunks)
    assert "event: compose.receipt" in rest
    assert rest.endswith("data: [DONE]\n\n")


def test_a_payment_presented_again_while_its_first_use_streams_is_refused(server: PaidServer) -> None:
    devnet = server.devnet
    before = server.balance(devnet.payee.address)
    requirement = upto_requirement(server, "/stream")
    payment = {"PAYMENT-SIGNATURE": header(permit2_payload(devnet, devnet.payers[0], requirement))}
    with server.client.stream("POST", "/stream", json={"use": 7, "wait": True}, headers=payment) as first:
        chunks = first.iter_text()
        assert next(chunks).startswith('data: {"n":1}')
        # Not settled yet, so the chain would still accept the nonce: the middleware must refuse it itself.
        replay = server.client.post("/stream", json={"use": 1}, headers=payment)
        server.probe.gate.set()
        rest = "".join(chunks)
    assert (replay.status_code, replay.json()["error"]) == (402, "permit2_invalid_nonce")
    assert "event: compose.receipt" in rest
    assert server.probe.calls == ["/stream"]
    assert server.balance(devnet.payee.address) == before + 7


def test_a_stream_the_client_leaves_is_still_settled_for_what_the_app_reported(server: PaidServer) -> None:
    devnet = server.devnet
    before = server.balance(devnet.payee.address)
    payment = header(permit2_payload(devnet, devnet.payers[0], upto_requirement(server, "/stream")))
    body = {"use": 3210, "wait": True, "charge_first": True}
    with server.client.stream("POST", "/stream", json=body, headers={"PAYMENT-SIGNATURE": payment}) as response:
        assert next(response.iter_text()).startswith('data: {"n":1}')
    # The client is gone before the end of the stream; the app is let go on, and stops at its next frame.
    server.probe.gate.set()
    deadline = time.monotonic() + 20
    while server.balance(devnet.payee.address) == before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.balance(devnet.payee.address) == before + 3210
