"""How LocalFacilitator sends a settlement without web3: the transaction it signs, its nonce, a refused or reverted
settlement."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from server_support import automine_off, balance, eip3009_payload, mine, refusing_relay, rpc_relay
from test_local_facilitator import requirement, signed
from web3 import Web3

from x402pay._jsonrpc import RpcAnswerError
from x402pay._protocol.models import PaymentPayload, PaymentRequirements
from x402pay.server import LocalFacilitator, SettlementStore
from x402pay.server._calldata import settlement
from x402pay.server._evm import payment_key, read_authorization
from x402pay.server._sender import Quote, Sender, rlp, tip_from_history
from x402pay.server._serving import serve_app
from x402pay.testing import Devnet

PRICE_ROUTE = "GET /paid"


def test_rlp_of_the_yellow_paper_examples() -> None:
    assert rlp(b"dog") == b"\x83dog"
    assert rlp([b"cat", b"dog"]) == b"\xc8\x83cat\x83dog"
    assert (rlp(b""), rlp([]), rlp(0), rlp(15), rlp(1024)) == (b"\x80", b"\xc0", b"\x80", b"\x0f", b"\x82\x04\x00")
    assert rlp(b"x" * 56) == b"\xb8\x38" + b"x" * 56
    assert rlp([[], [[]], [[], [[]]]]) == bytes.fromhex("c7c0c1c0c3c0c1c0")


@pytest.mark.parametrize("data_size", [0, 1, 55, 56, 400, 70_000])
def test_the_transaction_signed_here_is_the_one_eth_account_signs(data_size: int) -> None:
    account = Account.from_key("0x" + "42" * 32)
    quote = Quote("0x" + "a1" * 20, "0x" + "7f" * data_size, 91_234, 10**9, 3 * 10**9 + 7, 0, 0, 0)
    sender = Sender(lambda calls: [], account, SettlementStore(), lambda: 31337)
    raw, tx_hash = sender.signed(quote, 12)
    theirs = account.sign_transaction({
        "type": 2, "chainId": 31337, "nonce": 12, "to": Web3.to_checksum_address(quote.to), "value": 0,
        "data": quote.data, "gas": 91_234, "maxPriorityFeePerGas": 10**9, "maxFeePerGas": 3 * 10**9 + 7,
    })  # fmt: skip
    assert raw == bytes(theirs.raw_transaction)
    assert tx_hash == theirs.hash.to_0x_hex()


def send_first(devnet: Devnet) -> str:
    """A transaction from the facilitator's account that is not a settlement (as another program on the same key)."""
    web3, account = devnet.web3(), devnet.facilitator
    tx = {
        "type": 2, "chainId": devnet.chain_id, "to": devnet.payee.address, "value": 1, "gas": 21_000,
        "nonce": web3.eth.get_transaction_count(account.address, "pending"),
        "maxFeePerGas": 10**11, "maxPriorityFeePerGas": 10**9,
    }  # fmt: skip
    return web3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction).to_0x_hex()


@pytest.mark.chain
async def test_a_transaction_from_the_same_account_between_settlements_takes_no_nonce_from_them(
    x402pay_chain: Devnet,
) -> None:
    wanted = requirement(x402pay_chain, PRICE_ROUTE)
    facilitator = LocalFacilitator(x402pay_chain.rpc_url, x402pay_chain.facilitator)
    assert (await facilitator.settle(signed(x402pay_chain, wanted), wanted)).success
    other = send_first(x402pay_chain)
    settled = await facilitator.settle(signed(x402pay_chain, wanted), wanted)
    assert settled.success, settled
    web3 = x402pay_chain.web3()
    assert web3.eth.get_transaction_receipt(other)["status"] == 1
    assert web3.eth.get_transaction(settled.transaction)["nonce"] == web3.eth.get_transaction(other)["nonce"] + 1


@pytest.mark.chain
async def test_a_transaction_the_chain_forgot_leaves_no_nonce_gap(x402pay_chain: Devnet) -> None:
    """A settlement mined, then undone (a snapshot reverted, as a reorganisation or a restarted node would): the next
    settlement takes the nonce the node counts, not one past the forgotten transaction (which would never be mined)."""
    wanted = requirement(x402pay_chain, PRICE_ROUTE)
    facilitator = LocalFacilitator(x402pay_chain.rpc_url, x402pay_chain.facilitator, receipt_timeout=5)
    before = x402pay_chain.snapshot()
    assert (await facilitator.settle(signed(x402pay_chain, wanted), wanted)).success
    x402pay_chain.revert(before)
    settled = await facilitator.settle(signed(x402pay_chain, wanted), wanted)
    assert settled.success, settled


def racing_rpc(upstream: str, devnet: Devnet) -> Any:
    """A JSON-RPC relay in front of anvil that, before it forwards the first broadcast, sends a transaction of the
    same account itself: the settlement's nonce, quoted a moment before, is then used."""
    raced = threading.Event()

    def race(body: bytes) -> bool:
        if b'"eth_sendRawTransaction"' in body and not raced.is_set():
            raced.set()
            send_first(devnet)
        return False

    return rpc_relay(upstream, race)


@pytest.mark.chain
async def test_a_nonce_taken_between_quote_and_broadcast_is_read_again_and_the_settlement_signed_again(
    x402pay_chain: Devnet,
) -> None:
    devnet, payer = x402pay_chain, x402pay_chain.payers[0]
    wanted = requirement(devnet, PRICE_ROUTE)
    paid = signed(devnet, wanted)
    before = balance(devnet, payer.address)
    with serve_app(racing_rpc(devnet.rpc_url, devnet)) as rpc_url:
        facilitator = LocalFacilitator(rpc_url, devnet.facilitator)
        settled = await facilitator.settle(paid, wanted)
        assert settled.success, settled
        assert (await facilitator.settle(signed(devnet, wanted), wanted)).success  # the nonce after it
    row = facilitator.settlements.find(payment_key(read_authorization(paid.payload, "exact"), wanted))
    assert row is not None
    assert (row.state, row.tx_hash) == ("settled", settled.transaction)
    assert balance(devnet, payer.address) == before - 2 * wanted.amount


def drain(devnet: Devnet, payer: LocalAccount) -> None:
    """Move all of `payer`'s USDC to the deployer."""
    usdc = devnet.contract("TestUSDC", devnet.usdc)
    everything = usdc.functions.balanceOf(payer.address).call()
    call = usdc.functions.transfer(devnet.deployer.address, everything)
    devnet.web3().eth.send_transaction(call.build_transaction({"from": payer.address}))


@pytest.mark.chain
async def test_a_settlement_whose_estimate_reverts_is_refused_unrecorded_and_takes_no_nonce(
    x402pay_chain: Devnet,
) -> None:
    devnet, payer = x402pay_chain, x402pay_chain.payers[0]
    wanted = requirement(devnet, PRICE_ROUTE)
    facilitator = LocalFacilitator(devnet.rpc_url, devnet.facilitator)
    paid = signed(devnet, wanted)
    assert (await facilitator.verify(paid, wanted)).is_valid
    sent_before = devnet.web3().eth.get_transaction_count(devnet.facilitator.address)
    drain(devnet, payer)  # the funds leave between verification and settlement
    refused = await facilitator.settle(paid, wanted)
    assert (refused.success, refused.error_reason, refused.transaction) == (False, "insufficient_funds", "")
    assert facilitator.settlements.find(payment_key(read_authorization(paid.payload, "exact"), wanted)) is None
    other = eip3009_payload(devnet, devnet.payers[1], wanted.to_wire())
    settled = await facilitator.settle(PaymentPayload.model_validate(other), wanted)
    assert settled.success, settled  # the next settlement takes the nonce the refused one never used
    assert devnet.web3().eth.get_transaction(settled.transaction)["nonce"] == sent_before


def jump_the_queue(devnet: Devnet, paid: PaymentPayload, wanted: PaymentRequirements) -> None:
    """Send `paid`'s settlement from the deployer with a priority fee that puts it first in the next block."""
    web3, sender = devnet.web3(), devnet.deployer
    call = settlement(read_authorization(paid.payload, "exact"), wanted.asset, wanted.amount)
    tx = {
        "type": 2, "chainId": devnet.chain_id, "to": call["to"], "data": call["data"], "value": 0, "gas": 300_000,
        "nonce": web3.eth.get_transaction_count(sender.address, "pending"),
        "maxFeePerGas": 10**12, "maxPriorityFeePerGas": 10**11,
    }  # fmt: skip
    web3.eth.send_raw_transaction(sender.sign_transaction(tx).raw_transaction)


@pytest.mark.chain
async def test_a_settlement_that_reverts_when_mined_is_failed_and_takes_no_later_nonce(x402pay_chain: Devnet) -> None:
    """Another sender's settlement of the same payment is mined first: ours reverts; the next one still settles."""
    devnet = x402pay_chain
    wanted = requirement(devnet, PRICE_ROUTE)
    paid = signed(devnet, wanted)
    facilitator = LocalFacilitator(devnet.rpc_url, devnet.facilitator, receipt_timeout=0.2)
    with automine_off(devnet):
        assert (await facilitator.settle(paid, wanted)).error_reason == "settlement_pending"
        jump_the_queue(devnet, paid, wanted)
        mine(devnet)
    (decided,) = facilitator.reconcile()
    assert (decided.state, decided.detail.endswith("reverted")) == ("failed", True)
    again = await facilitator.settle(paid, wanted)  # a failed row may be sent again: the chain refuses it now
    assert (again.success, again.error_reason) == (False, "invalid_exact_evm_nonce_already_used")
    assert (await facilitator.settle(signed(devnet, wanted), wanted)).success


@pytest.mark.chain
async def test_a_node_without_a_priority_fee_method_prices_the_tip_from_fee_history(x402pay_chain: Devnet) -> None:
    devnet, seen = x402pay_chain, []
    wanted = requirement(devnet, PRICE_ROUTE)
    no_tip_method = refusing_relay(
        devnet.rpc_url, lambda call: call["method"] == "eth_maxPriorityFeePerGas",
        {"code": -32601, "message": "method not found"}, seen,
    )  # fmt: skip
    with serve_app(no_tip_method) as rpc_url:
        facilitator = LocalFacilitator(rpc_url, devnet.facilitator)
        first = await facilitator.settle(signed(devnet, wanted), wanted)
        assert first.success, first
        seen.clear()
        second = await facilitator.settle(signed(devnet, wanted), wanted)
        assert second.success, second
    asked = [call["method"] for call in seen]
    assert "eth_maxPriorityFeePerGas" not in asked  # the node said it has none: not asked again
    assert asked.count("eth_feeHistory") == 1  # in the quote's batch
    web3 = devnet.web3()
    history = web3.eth.fee_history(10, "latest", [50])
    tips = sorted(tip for (tip,) in history["reward"] if tip > 0)
    assert web3.eth.get_transaction(first.transaction)["maxPriorityFeePerGas"] > 0
    mined = web3.eth.get_transaction(second.transaction)
    assert mined["maxPriorityFeePerGas"] in tips or (not tips and mined["maxPriorityFeePerGas"] == 10**9)


def test_the_tip_from_fee_history_is_the_median_tip_paid_or_a_quiet_chains_default() -> None:
    def history(*tips: int | None) -> dict[str, Any]:
        return {"result": {"reward": [[hex(tip)] if tip is not None else [] for tip in tips]}}

    assert tip_from_history(history(5, 0, 3, 9, None)) == 5
    assert tip_from_history(history(0, 0, None)) == 10**9
    with pytest.raises(RpcAnswerError):
        tip_from_history({"result": {"oldestBlock": "0x1"}})
    with pytest.raises(RpcAnswerError):
        tip_from_history({"error": {"code": -32601, "message": "method not found"}})
