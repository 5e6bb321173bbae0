"""LocalFacilitator on its own, on anvil: the checks that the middleware tests do not reach."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from paid_app import PRICE, UPTO_MAX, routes
from server_support import RecordingRpc, automine_off, eip3009_payload, mine, permit2_payload

from x402pay._protocol.models import PaymentPayload, PaymentRequirements
from x402pay._rpc import web3_for
from x402pay.errors import FacilitatorError
from x402pay.server import LocalFacilitator
from x402pay.testing import Devnet

pytestmark = pytest.mark.chain


def requirement(devnet: Devnet, route: str, **changes: Any) -> PaymentRequirements:
    made = routes(devnet)[route].requirement(
        network=devnet.network,
        chain_id=devnet.chain_id,
        pay_to=devnet.payee.address,
        ceiling=None,
        facilitator=devnet.facilitator.address,
    )
    return made.model_copy(update=changes)


def payload(data: dict[str, Any]) -> PaymentPayload:
    return PaymentPayload.model_validate(data)


async def test_supported(facilitator: LocalFacilitator, x402pay_chain: Devnet) -> None:
    supported = await facilitator.supported()
    upto = supported.kind("upto", x402pay_chain.network)
    assert upto is not None
    assert upto.extra == {"facilitatorAddress": x402pay_chain.facilitator.address}
    assert supported.kind("exact", x402pay_chain.network, version=1) is not None
    assert supported.signers == {"eip155:*": [x402pay_chain.facilitator.address]}


async def test_a_used_permit2_nonce_is_refused_by_the_chain_check_and_a_second_settle_sends_nothing(
    facilitator: LocalFacilitator, x402pay_chain: Devnet
) -> None:
    wanted = requirement(x402pay_chain, "GET /paid-permit2")
    paid = payload(permit2_payload(x402pay_chain, x402pay_chain.payers[0], wanted.to_wire()))
    settled = await facilitator.settle(paid, wanted)
    assert (settled.success, settled.amount) == (True, PRICE)
    again = await facilitator.verify(paid, wanted)
    assert (again.is_valid, again.invalid_reason) == (False, "permit2_invalid_nonce")
    resettled = await facilitator.settle(paid, wanted)  # the same answer again: nothing is sent twice
    assert (resettled.success, resettled.transaction, resettled.amount) == (True, settled.transaction, PRICE)
    assert [broadcast.tx_hash for broadcast in facilitator.settlements.pending()] == []


async def test_upto_settles_up_to_the_signed_maximum(facilitator: LocalFacilitator, x402pay_chain: Devnet) -> None:
    wanted = requirement(x402pay_chain, "POST /metered")
    paid = payload(permit2_payload(x402pay_chain, x402pay_chain.payers[0], wanted.to_wire()))
    assert (await facilitator.verify(paid, wanted)).is_valid
    too_much = await facilitator.settle(paid, wanted.model_copy(update={"amount": UPTO_MAX + 1}))
    assert too_much.error_reason == "invalid_upto_evm_payload_settlement_exceeds_amount"
    settled = await facilitator.settle(paid, wanted.model_copy(update={"amount": UPTO_MAX}))
    assert (settled.success, settled.amount) == (True, UPTO_MAX)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"network": "eip155:8453"}, "invalid_network"),
        ({"scheme": "stream"}, "unsupported_scheme"),
        ({"extra": {}}, "missing_eip712_domain"),
        ({"extra": {"name": "USD Coin", "version": "2", "assetTransferMethod": "permit2"}}, "invalid_payload"),
        ({"asset": "0x" + "22" * 20}, "invalid_exact_evm_payload_signature"),
    ],
)
async def test_verify_refuses_a_payment_for_another_requirement(
    facilitator: LocalFacilitator, x402pay_chain: Devnet, change: dict[str, Any], reason: str
) -> None:
    signed_for = requirement(x402pay_chain, "GET /paid")
    paid = payload(eip3009_payload(x402pay_chain, x402pay_chain.payers[0], signed_for.to_wire()))
    verdict = await facilitator.verify(paid, signed_for.model_copy(update=change))
    assert (verdict.is_valid, verdict.invalid_reason) == (False, reason)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda body: body["payload"].pop("signature"),
        lambda body: body["payload"]["authorization"].update(nonce="0x1234"),
        lambda body: body["payload"]["authorization"].update(value="0x10"),
        lambda body: body["payload"]["authorization"].update(to="not an address"),
    ],
    ids=["no-signature", "short-nonce", "hex-value", "bad-address"],
)
async def test_a_malformed_scheme_payload_is_invalid_payload(
    facilitator: LocalFacilitator, x402pay_chain: Devnet, mangle: Any
) -> None:
    wanted = requirement(x402pay_chain, "GET /paid")
    body = eip3009_payload(x402pay_chain, x402pay_chain.payers[0], wanted.to_wire())
    mangle(body)
    verdict = await facilitator.verify(payload(body), wanted)
    assert (verdict.is_valid, verdict.invalid_reason) == (False, "invalid_payload")


def signed(devnet: Devnet, wanted: PaymentRequirements) -> PaymentPayload:
    """A fresh payment for `wanted` from the first payer, EIP-3009 or Permit2 as the requirement says."""
    sign = permit2_payload if wanted.extra_str("assetTransferMethod") == "permit2" else eip3009_payload
    return payload(sign(devnet, devnet.payers[0], wanted.to_wire()))


@pytest.mark.parametrize("route", ["GET /paid", "GET /paid-permit2", "POST /metered"])
async def test_a_valid_payment_is_verified_with_one_batch_of_reads(x402pay_chain: Devnet, route: str) -> None:
    """The block (the clock), the simulated settlement, the balance and (Permit2) the allowance: one request."""
    wanted = requirement(x402pay_chain, route)
    with RecordingRpc(x402pay_chain.rpc_url) as rpc:
        facilitator = LocalFacilitator(rpc.url, x402pay_chain.facilitator, verify_ttl=0)
        assert (await facilitator.verify(signed(x402pay_chain, wanted), wanted)).is_valid  # learns chain id, token
        rpc.batches.clear()
        verdict = await facilitator.verify(signed(x402pay_chain, wanted), wanted)
    assert verdict.is_valid
    funds = ["eth_call", "eth_call"] if route != "GET /paid" else ["eth_call"]
    assert rpc.batches == [["eth_getBlockByNumber", "eth_call", *funds]]


async def test_a_valid_payment_settles_without_reading_each_state(x402pay_chain: Devnet) -> None:
    wanted = requirement(x402pay_chain, "GET /paid")
    with RecordingRpc(x402pay_chain.rpc_url) as rpc:
        facilitator = LocalFacilitator(rpc.url, x402pay_chain.facilitator)
        assert (await facilitator.settle(signed(x402pay_chain, wanted), wanted)).success
        rpc.methods.clear()
        settled = await facilitator.settle(signed(x402pay_chain, wanted), wanted)
    assert settled.success
    assert "eth_call" not in rpc.methods  # its gas estimate is the simulation; no nonce, balance or allowance reads
    assert not {"eth_chainId", "eth_getCode"} & set(rpc.methods)
    assert rpc.methods.count("eth_sendRawTransaction") == 1


async def test_a_payment_for_an_asset_without_code_is_never_valid(
    facilitator: LocalFacilitator, x402pay_chain: Devnet
) -> None:
    """A call to an address without code succeeds and does nothing: such a simulation proves nothing."""
    wanted = requirement(x402pay_chain, "GET /paid", asset="0x" + "22" * 20)
    with pytest.raises(FacilitatorError, match="verifying on chain"):
        await facilitator.verify(signed(x402pay_chain, wanted), wanted)


async def test_a_short_balance_still_names_its_check(facilitator: LocalFacilitator, x402pay_chain: Devnet) -> None:
    """The failed simulation sends the payment through the state reads, which say which check failed."""
    wanted = requirement(x402pay_chain, "GET /paid", amount=10**15)
    verdict = await facilitator.verify(signed(x402pay_chain, wanted), wanted)
    assert (verdict.is_valid, verdict.invalid_reason) == (False, "insufficient_funds")


async def test_settling_a_spent_eip3009_payment_again_names_the_used_nonce(
    facilitator: LocalFacilitator, x402pay_chain: Devnet
) -> None:
    """Settling simulates only through its gas estimate: the revert still names the check that failed."""
    wanted = requirement(x402pay_chain, "GET /paid")
    paid = signed(x402pay_chain, wanted)
    assert (await facilitator.settle(paid, wanted)).success
    elsewhere = LocalFacilitator(x402pay_chain.rpc_url, x402pay_chain.facilitator)  # a store that never sent it
    again = await elsewhere.settle(paid, wanted)
    assert (again.success, again.error_reason, again.transaction) == (False, "invalid_exact_evm_nonce_already_used", "")


@pytest.mark.parametrize(
    ("route", "reason"),
    [("GET /paid", "invalid_exact_evm_payload_signature"), ("GET /paid-permit2", "invalid_permit2_signature")],
)
async def test_a_payment_signed_by_someone_else_is_refused(
    facilitator: LocalFacilitator, x402pay_chain: Devnet, route: str, reason: str
) -> None:
    wanted = requirement(x402pay_chain, route)
    sign = permit2_payload if route.endswith("permit2") else eip3009_payload
    forged = payload(sign(x402pay_chain, x402pay_chain.payers[0], wanted.to_wire(), signer=x402pay_chain.payers[1]))
    verdict = await facilitator.verify(forged, wanted)
    assert (verdict.is_valid, verdict.invalid_reason) == (False, reason)
    assert "signed by " + x402pay_chain.payers[1].address in (verdict.invalid_message or "")


def mine_once_pending(devnet: Devnet, sender: str, after: float) -> None:
    """Mine a block `after` seconds after a transaction from `sender` is pending (automine being off)."""
    web3 = web3_for(devnet.rpc_url)
    mined = web3.eth.get_transaction_count(sender)
    deadline = time.monotonic() + 20
    while web3.eth.get_transaction_count(sender, "pending") == mined and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(after)
    mine(devnet)


async def test_a_receipt_that_comes_late_is_asked_for_again_and_again(x402pay_chain: Devnet) -> None:
    """The first asks come milliseconds apart (web3's wait sleeps 100 ms between them): in the half second before the
    block, eight on an idle machine (2, 4, 8 ... ms apart), at least five on a busy one."""
    wanted = requirement(x402pay_chain, "GET /paid")
    paid = signed(x402pay_chain, wanted)
    miner = threading.Thread(target=mine_once_pending, args=(x402pay_chain, x402pay_chain.facilitator.address, 0.5))
    with RecordingRpc(x402pay_chain.rpc_url) as rpc, automine_off(x402pay_chain):
        facilitator = LocalFacilitator(rpc.url, x402pay_chain.facilitator)
        miner.start()
        try:
            settled = await facilitator.settle(paid, wanted)
        finally:
            miner.join()
    assert settled.success, settled
    assert x402pay_chain.web3().eth.get_transaction_receipt(settled.transaction)["status"] == 1
    assert rpc.methods.count("eth_getTransactionReceipt") >= 5


async def test_a_settlement_never_mined_is_pending_after_receipt_timeout(x402pay_chain: Devnet) -> None:
    wanted = requirement(x402pay_chain, "GET /paid")
    facilitator = LocalFacilitator(x402pay_chain.rpc_url, x402pay_chain.facilitator, receipt_timeout=0.5)
    with automine_off(x402pay_chain):
        started = time.monotonic()
        settled = await facilitator.settle(signed(x402pay_chain, wanted), wanted)
        waited = time.monotonic() - started
    assert (settled.success, settled.error_reason) == (False, "settlement_pending")
    assert 0.5 <= waited < 5
