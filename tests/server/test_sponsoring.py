"""The eip2612GasSponsoring extension on the paid side, on anvil: the offer, the checks, settleWithPermit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from paid_app import PRICE, UPTO_MAX, PaidServer, paid_server, routes
from server_support import decode, eip2612_extension, eip3009_payload, header, now, permit2_payload
from web3 import Web3

from x402pay._protocol.addresses import EXACT_PERMIT2_PROXY_ADDRESS, PERMIT2_ADDRESS, UPTO_PERMIT2_PROXY_ADDRESS
from x402pay._protocol.models import PaymentPayload, PaymentRequirements
from x402pay.server import LocalFacilitator
from x402pay.testing import Devnet

pytestmark = pytest.mark.chain

EXTENSION = "eip2612GasSponsoring"
STRANGER = Account.from_key("0x" + "77" * 32)


def requirement(devnet: Devnet, route: str) -> PaymentRequirements:
    return routes(devnet)[route].requirement(
        network=devnet.network,
        chain_id=devnet.chain_id,
        pay_to=devnet.payee.address,
        ceiling=None,
        facilitator=devnet.facilitator.address,
    )


def sponsored(devnet: Devnet, payer: LocalAccount, wanted: PaymentRequirements, **override: Any) -> PaymentPayload:
    """A Permit2 payment for `wanted` carrying `payer`'s EIP-2612 permit (fields replaced by `override`)."""
    data = permit2_payload(devnet, payer, wanted.to_wire())
    data["extensions"] = eip2612_extension(devnet, payer, wanted.amount, **override)
    return PaymentPayload.model_validate(data)


def usdc_view(devnet: Devnet, function: str, *args: str) -> int:
    return int(devnet.contract("TestUSDC", devnet.usdc).functions[function](*args).call())


@pytest.fixture
def unapproved(x402pay_chain: Devnet) -> LocalAccount:
    """A payer holding USDC whose Permit2 allowance was taken back."""
    payer = x402pay_chain.payers[1]
    usdc = x402pay_chain.contract("TestUSDC", x402pay_chain.usdc)
    tx = usdc.functions.approve(PERMIT2_ADDRESS, 0).transact({"from": payer.address})
    x402pay_chain.web3().eth.wait_for_transaction_receipt(tx)
    return payer


# -- the facilitator ------------------------------------------------------------------------------------------


async def test_supported_lists_the_extension(facilitator: LocalFacilitator) -> None:
    assert (await facilitator.supported()).extensions == [EXTENSION]


@pytest.mark.parametrize(
    ("route", "charge", "proxy"),
    [("GET /paid-permit2", PRICE, EXACT_PERMIT2_PROXY_ADDRESS), ("POST /metered", 12_345, UPTO_PERMIT2_PROXY_ADDRESS)],
    ids=["exact", "upto"],
)
async def test_a_permit_pays_without_a_prior_approval(
    facilitator: LocalFacilitator, x402pay_chain: Devnet, unapproved: LocalAccount, route: str, charge: int, proxy: str
) -> None:
    devnet, payer = x402pay_chain, unapproved.address
    wanted = requirement(devnet, route)
    paid = sponsored(devnet, unapproved, wanted)
    before = usdc_view(devnet, "balanceOf", payer), usdc_view(devnet, "nonces", payer)
    assert (await facilitator.verify(paid, wanted)).is_valid

    settled = await facilitator.settle(paid, wanted.model_copy(update={"amount": charge}))

    assert (settled.success, settled.amount) == (True, charge), settled.error_message
    logs = devnet.web3().eth.get_transaction_receipt(settled.transaction)["logs"]
    assert any(log["address"] == proxy and log["topics"][0] == Web3.keccak(text="SettledWithPermit()") for log in logs)
    assert usdc_view(devnet, "balanceOf", payer) == before[0] - charge
    assert usdc_view(devnet, "nonces", payer) == before[1] + 1
    assert usdc_view(devnet, "allowance", payer, PERMIT2_ADDRESS) == wanted.amount - charge
    again = await facilitator.verify(paid, wanted)
    assert again.invalid_reason == "permit2_invalid_nonce"


Override = Callable[[Devnet], dict[str, Any]]


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        (lambda devnet: {"signer": STRANGER}, "invalid_eip2612_signature"),
        (lambda devnet: {"nonce": 7}, "invalid_eip2612_signature"),
        (lambda devnet: {"spender": EXACT_PERMIT2_PROXY_ADDRESS}, "eip2612_spender_not_permit2"),
        (lambda devnet: {"value": PRICE + 1}, "permit2_2612_amount_mismatch"),
        (lambda devnet: {"value": PRICE - 1}, "permit2_2612_amount_mismatch"),
        (lambda devnet: {"deadline": now(devnet) - 1}, "eip2612_deadline_expired"),
        (lambda devnet: {"owner": STRANGER.address, "signer": STRANGER}, "eip2612_from_mismatch"),
        (lambda devnet: {"token": "0x" + "22" * 20}, "eip2612_asset_mismatch"),
    ],
    ids=["signer", "stale-nonce", "spender", "amount-above", "amount-below", "deadline", "from", "asset"],
)
async def test_verify_refuses_a_bad_permit(
    facilitator: LocalFacilitator, x402pay_chain: Devnet, unapproved: LocalAccount, override: Override, reason: str
) -> None:
    wanted = requirement(x402pay_chain, "GET /paid-permit2")
    paid = sponsored(x402pay_chain, unapproved, wanted, **override(x402pay_chain))

    verdict = await facilitator.verify(paid, wanted)
    settled = await facilitator.settle(paid, wanted)

    assert (verdict.is_valid, verdict.invalid_reason, verdict.payer) == (False, reason, unapproved.address)
    assert (settled.success, settled.error_reason, settled.transaction) == (False, reason, "")


async def test_an_upto_permit_must_approve_the_signed_maximum(
    facilitator: LocalFacilitator, x402pay_chain: Devnet, unapproved: LocalAccount
) -> None:
    wanted = requirement(x402pay_chain, "POST /metered")
    paid = sponsored(x402pay_chain, unapproved, wanted, value=UPTO_MAX // 2)
    verdict = await facilitator.verify(paid, wanted)
    assert verdict.invalid_reason == "permit2_2612_amount_mismatch"


@pytest.mark.parametrize(
    ("info", "reason"),
    [
        ({"description": "echoed", "version": "1"}, "permit2_allowance_required"),  # only the offer, echoed
        ({"signature": "0x1234"}, "invalid_eip2612_extension_format"),
        ({"amount": 10_000}, "invalid_eip2612_extension_format"),
        ({"version": "2"}, "invalid_eip2612_extension_format"),
    ],
    ids=["echo", "short-signature", "number", "version"],
)
async def test_an_unsigned_or_malformed_extension(
    facilitator: LocalFacilitator, x402pay_chain: Devnet, unapproved: LocalAccount, info: dict[str, Any], reason: str
) -> None:
    wanted = requirement(x402pay_chain, "GET /paid-permit2")
    data = permit2_payload(x402pay_chain, unapproved, wanted.to_wire())
    signed = eip2612_extension(x402pay_chain, unapproved, wanted.amount)[EXTENSION]["info"]
    data["extensions"] = {EXTENSION: {"info": info if "description" in info else {**signed, **info}}}
    verdict = await facilitator.verify(PaymentPayload.model_validate(data), wanted)
    assert verdict.invalid_reason == reason


async def test_with_enough_allowance_the_extension_is_not_used(
    facilitator: LocalFacilitator, x402pay_chain: Devnet
) -> None:
    devnet, payer = x402pay_chain, x402pay_chain.payers[0]
    wanted = requirement(devnet, "GET /paid-permit2")
    paid = sponsored(devnet, payer, wanted, signer=STRANGER)  # a bad permit, never looked at
    nonce = usdc_view(devnet, "nonces", payer.address)
    assert (await facilitator.verify(paid, wanted)).is_valid
    settled = await facilitator.settle(paid, wanted)
    assert settled.success, settled.error_message
    logs = devnet.web3().eth.get_transaction_receipt(settled.transaction)["logs"]
    assert any(log["topics"][0] == Web3.keccak(text="Settled()") for log in logs)
    assert usdc_view(devnet, "nonces", payer.address) == nonce


async def test_an_eip3009_payment_ignores_the_extension(facilitator: LocalFacilitator, x402pay_chain: Devnet) -> None:
    payer = x402pay_chain.payers[0]
    wanted = requirement(x402pay_chain, "GET /paid")
    data = eip3009_payload(x402pay_chain, payer, wanted.to_wire())
    data["extensions"] = eip2612_extension(x402pay_chain, payer, PRICE, signer=STRANGER)
    assert (await facilitator.verify(PaymentPayload.model_validate(data), wanted)).is_valid


# -- the middleware --------------------------------------------------------------------------------------------


def challenge(server: PaidServer, method: str, path: str) -> dict[str, Any]:
    response = server.client.request(method, path, json={"use": 1} if method == "POST" else None)
    assert response.status_code == 402
    return decode(response.headers["payment-required"])


@pytest.mark.parametrize(("method", "path"), [("GET", "/paid-permit2"), ("POST", "/metered")])
def test_a_permit2_route_offers_the_extension(server: PaidServer, method: str, path: str) -> None:
    offered = challenge(server, method, path)["extensions"][EXTENSION]
    assert offered["info"]["version"] == "1"
    assert offered["info"]["description"]
    assert offered["schema"]["type"] == "object"
    fields = ["from", "asset", "spender", "amount", "nonce", "deadline", "signature", "version"]
    assert offered["schema"]["required"] == fields
    assert set(offered["schema"]["properties"]) == set(fields)


def test_an_eip3009_route_offers_nothing(server: PaidServer) -> None:
    assert "extensions" not in challenge(server, "GET", "/paid")


def test_the_offer_can_be_withdrawn(x402pay_chain: Devnet, facilitator: LocalFacilitator) -> None:
    with paid_server(x402pay_chain, facilitator, gas_sponsoring=False) as server:
        assert "extensions" not in challenge(server, "GET", "/paid-permit2")


def test_the_middleware_serves_a_payer_without_allowance(server: PaidServer, unapproved: LocalAccount) -> None:
    devnet = server.devnet
    accepted = challenge(server, "GET", "/paid-permit2")["accepts"][0]
    payment = permit2_payload(devnet, unapproved, accepted)
    payment["extensions"] = eip2612_extension(devnet, unapproved, PRICE)
    before = server.balance(unapproved.address)

    response = server.client.get("/paid-permit2", headers={"PAYMENT-SIGNATURE": header(payment)})

    assert response.status_code == 200, response.text
    assert decode(response.headers["payment-response"])["success"] is True
    assert server.balance(unapproved.address) == before - PRICE
    assert server.probe.calls == ["/paid-permit2"]


def test_the_middleware_refuses_a_bad_permit_before_the_app_runs(server: PaidServer, unapproved: LocalAccount) -> None:
    devnet = server.devnet
    accepted = challenge(server, "GET", "/paid-permit2")["accepts"][0]
    payment = permit2_payload(devnet, unapproved, accepted)
    payment["extensions"] = eip2612_extension(devnet, unapproved, PRICE, signer=STRANGER)

    response = server.client.get("/paid-permit2", headers={"PAYMENT-SIGNATURE": header(payment)})

    assert response.status_code == 402
    assert response.json()["error"] == "invalid_eip2612_signature"
    assert server.probe.calls == []
