"""A repeat payer checked against the mirror of their funds (`verify_ttl`), on anvil, through a relay that shows
every request the facilitator makes the chain answer."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from typing import Any

import anyio.to_thread
import pytest
from eth_account import Account
from paid_app import PRICE, routes
from server_support import RecordingRpc, eip3009_payload, permit2_payload
from x402.mechanisms.evm.batch_settlement import types as sdk_types
from x402.mechanisms.evm.batch_settlement.client.eip3009 import create_batch_settlement_eip3009_deposit_payload
from x402.mechanisms.evm.signers import EthAccountSigner
from x402.schemas import PaymentRequirements as SdkRequirements

from x402pay._jsonrpc import HttpJsonRpc, RpcAnswerError, result_of
from x402pay._jsonrpc_async import AsyncHttpJsonRpc
from x402pay._protocol.models import PaymentPayload, PaymentRequirements
from x402pay._rpc import web3_for
from x402pay._schemes.channel import MIN_WITHDRAW_DELAY
from x402pay.server import LocalFacilitator, Price, _calldata
from x402pay.server._evm import read_authorization
from x402pay.testing import Devnet

pytestmark = pytest.mark.chain


def requirement(devnet: Devnet, route: str = "GET /paid") -> PaymentRequirements:
    return routes(devnet)[route].requirement(
        network=devnet.network, chain_id=devnet.chain_id, pay_to=devnet.payee.address, ceiling=None,
        facilitator=devnet.facilitator.address,
    )  # fmt: skip


def signed(devnet: Devnet, wanted: PaymentRequirements, **override: Any) -> PaymentPayload:
    permit2 = wanted.scheme == "upto" or wanted.extra_str("assetTransferMethod") == "permit2"
    sign = permit2_payload if permit2 else eip3009_payload
    return PaymentPayload.model_validate(sign(devnet, devnet.payers[0], wanted.to_wire(), **override))


@pytest.fixture
def rpc(x402pay_chain: Devnet) -> Iterator[RecordingRpc]:
    with RecordingRpc(x402pay_chain.rpc_url) as relay:
        yield relay


def usdc_balance(devnet: Devnet, address: str) -> int:
    return int(devnet.contract("TestUSDC", devnet.usdc).functions.balanceOf(address).call())


def move_away(devnet: Devnet, keep: int) -> None:
    """The first payer sends all their USDC but `keep` elsewhere, on chain, behind the facilitator's back."""
    payer = devnet.payers[0].address
    token = devnet.contract("TestUSDC", devnet.usdc)
    amount = usdc_balance(devnet, payer) - keep
    tx = token.functions.transfer(devnet.payers[1].address, amount).transact({"from": payer})
    devnet.web3().eth.wait_for_transaction_receipt(tx)


@pytest.mark.parametrize("route", ["GET /paid", "GET /paid-permit2", "POST /metered"])
async def test_a_repeat_payer_is_verified_without_asking_the_chain_and_settles(
    x402pay_chain: Devnet, rpc: RecordingRpc, route: str
) -> None:
    wanted = requirement(x402pay_chain, route)
    facilitator = LocalFacilitator(rpc.url, x402pay_chain.facilitator)
    assert (await facilitator.verify(signed(x402pay_chain, wanted), wanted)).is_valid
    assert len(rpc.batches) >= 1  # the first payment from this payer reads the chain
    rpc.batches.clear()
    repeat = signed(x402pay_chain, wanted)
    assert (await facilitator.verify(repeat, wanted)).is_valid
    assert rpc.batches == []
    before = usdc_balance(x402pay_chain, x402pay_chain.payee.address)
    settled = await facilitator.settle(repeat, wanted)
    assert settled.success
    assert usdc_balance(x402pay_chain, x402pay_chain.payee.address) - before == wanted.amount


async def test_a_stale_mirror_reads_the_chain_again(x402pay_chain: Devnet, rpc: RecordingRpc) -> None:
    wanted = requirement(x402pay_chain)
    facilitator = LocalFacilitator(rpc.url, x402pay_chain.facilitator, verify_ttl=0.3)
    assert (await facilitator.verify(signed(x402pay_chain, wanted), wanted)).is_valid
    rpc.batches.clear()
    await asyncio.sleep(0.4)
    assert (await facilitator.verify(signed(x402pay_chain, wanted), wanted)).is_valid
    assert rpc.batches == [["eth_getBlockByNumber", "eth_call", "eth_call"]]


async def test_verify_ttl_0_reads_the_chain_for_every_payment(x402pay_chain: Devnet, rpc: RecordingRpc) -> None:
    wanted = requirement(x402pay_chain)
    facilitator = LocalFacilitator(rpc.url, x402pay_chain.facilitator, verify_ttl=0)
    assert (await facilitator.verify(signed(x402pay_chain, wanted), wanted)).is_valid  # learns chain id, token
    rpc.batches.clear()
    for _ in range(2):
        assert (await facilitator.verify(signed(x402pay_chain, wanted), wanted)).is_valid
    assert rpc.batches == [["eth_getBlockByNumber", "eth_call", "eth_call"]] * 2


async def test_what_the_mirror_cannot_cover_is_asked_of_the_chain(x402pay_chain: Devnet, rpc: RecordingRpc) -> None:
    """Verified payments hold their amounts against the mirror: past what it read, the chain decides."""
    move_away(x402pay_chain, keep=2 * PRICE + PRICE // 2)
    wanted = requirement(x402pay_chain)
    facilitator = LocalFacilitator(rpc.url, x402pay_chain.facilitator)
    assert (await facilitator.verify(signed(x402pay_chain, wanted), wanted)).is_valid  # reads 2.5 prices
    rpc.batches.clear()
    assert (await facilitator.verify(signed(x402pay_chain, wanted), wanted)).is_valid  # 1.5 left in the mirror
    assert rpc.batches == []
    assert (await facilitator.verify(signed(x402pay_chain, wanted), wanted)).is_valid  # 0.5 left: ask the chain
    assert len(rpc.batches) == 1


async def test_a_payer_who_moves_their_funds_within_the_ttl_fails_one_settlement_then_is_refused(
    x402pay_chain: Devnet, rpc: RecordingRpc
) -> None:
    wanted = requirement(x402pay_chain)
    facilitator = LocalFacilitator(rpc.url, x402pay_chain.facilitator)
    assert (await facilitator.verify(signed(x402pay_chain, wanted), wanted)).is_valid
    move_away(x402pay_chain, keep=PRICE // 2)
    rpc.batches.clear()
    late = signed(x402pay_chain, wanted)
    assert (await facilitator.verify(late, wanted)).is_valid  # the mirror's risk: the chain was not asked
    assert rpc.batches == []
    failed = await facilitator.settle(late, wanted)
    assert (failed.success, failed.transaction) == (False, "")
    assert failed.error_reason != "settlement_pending"
    assert [broadcast.tx_hash for broadcast in facilitator.settlements.pending()] == []
    rpc.batches.clear()
    refused = await facilitator.verify(signed(x402pay_chain, wanted), wanted)  # the mirror was dropped
    assert (refused.is_valid, refused.invalid_reason) == (False, "insufficient_funds")
    assert rpc.batches[0][:2] == ["eth_getBlockByNumber", "eth_call"]


@pytest.mark.parametrize("route", ["GET /paid", "GET /paid-permit2"])
async def test_a_payment_settled_here_is_refused_locally_when_presented_again(
    x402pay_chain: Devnet, rpc: RecordingRpc, route: str
) -> None:
    wanted = requirement(x402pay_chain, route)
    facilitator = LocalFacilitator(rpc.url, x402pay_chain.facilitator)
    paid = signed(x402pay_chain, wanted)
    assert (await facilitator.verify(paid, wanted)).is_valid
    assert (await facilitator.settle(paid, wanted)).success
    rpc.batches.clear()
    again = await facilitator.verify(paid, wanted)
    nonce_used = "invalid_exact_evm_nonce_already_used" if route == "GET /paid" else "permit2_invalid_nonce"
    assert (again.is_valid, again.invalid_reason) == (False, nonce_used)
    assert rpc.batches == []


async def test_a_channel_deposit_sent_here_is_taken_from_the_payers_mirror(
    x402pay_chain: Devnet, rpc: RecordingRpc
) -> None:
    """A deposit into a payment channel moves the payer's tokens through this facilitator: a later exact payment
    the mirror would have covered without it is asked of the chain, which refuses it."""
    devnet, payer = x402pay_chain, x402pay_chain.payers[0]
    move_away(devnet, keep=2 * PRICE)
    wanted = requirement(devnet)
    facilitator = LocalFacilitator(rpc.url, devnet.facilitator)
    assert (await facilitator.verify(signed(devnet, wanted), wanted)).is_valid  # reads 2 prices, holds 1

    authorizer = Account.create().address
    price = Price.channel(PRICE, asset=devnet.usdc, receiver_authorizer=authorizer, token_name="USD Coin")
    channel = price.requirement(
        network=devnet.network, chain_id=devnet.chain_id, pay_to=devnet.payee.address, ceiling=None, facilitator=None
    )
    config = sdk_types.ChannelConfig(
        payer=payer.address, payer_authorizer=payer.address, receiver=devnet.payee.address,
        receiver_authorizer=authorizer, token=devnet.usdc, withdraw_delay=MIN_WITHDRAW_DELAY,
        salt="0x" + "00" * 31 + "07",
    )  # fmt: skip
    sdk_channel = SdkRequirements.model_validate(channel.to_wire())
    deposit = create_batch_settlement_eip3009_deposit_payload(
        EthAccountSigner(payer), sdk_channel, config, PRICE + PRICE // 2, PRICE
    )
    paid = PaymentPayload(x402_version=2, payload=deposit.to_dict(), accepted=channel.to_wire())
    settled = await facilitator.settle(paid, channel)
    assert settled.success, settled
    assert usdc_balance(devnet, payer.address) == PRICE // 2

    rpc.batches.clear()
    refused = await facilitator.verify(signed(devnet, wanted), wanted)  # the mirror: 2 - 1 held - 1.5 deposited
    assert (refused.is_valid, refused.invalid_reason) == (False, "insufficient_funds")
    assert rpc.batches[0][:2] == ["eth_getBlockByNumber", "eth_call"]


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ({"value": PRICE - 1}, "invalid_exact_evm_payload_authorization_value_mismatch"),
        ({"to": "0x" + "33" * 20}, "invalid_exact_evm_payload_recipient_mismatch"),
        ({"validBefore": 1}, "invalid_exact_evm_payload_authorization_valid_before"),
        ({"validAfter": 2**40}, "invalid_exact_evm_payload_authorization_valid_after"),
        ({"signer": "other payer"}, "invalid_exact_evm_payload_signature"),
    ],
    ids=["amount", "recipient", "expired", "not-yet-valid", "signature"],
)
async def test_a_repeat_payers_wrong_payment_is_still_refused(
    x402pay_chain: Devnet, override: dict[str, Any], reason: str
) -> None:
    wanted = requirement(x402pay_chain)
    facilitator = LocalFacilitator(x402pay_chain.rpc_url, x402pay_chain.facilitator)
    assert (await facilitator.verify(signed(x402pay_chain, wanted), wanted)).is_valid  # the mirror is fresh
    if "signer" in override:
        override = {"signer": x402pay_chain.payers[1]}
    verdict = await facilitator.verify(signed(x402pay_chain, wanted, **override), wanted)
    assert (verdict.is_valid, verdict.invalid_reason) == (False, reason)


async def test_a_repeat_payers_payment_for_another_asset_or_chain_is_refused(x402pay_chain: Devnet) -> None:
    wanted = requirement(x402pay_chain, "POST /metered")
    facilitator = LocalFacilitator(x402pay_chain.rpc_url, x402pay_chain.facilitator)
    assert (await facilitator.verify(signed(x402pay_chain, wanted), wanted)).is_valid
    other_token = signed(x402pay_chain, wanted, token=x402pay_chain.permit2)
    verdict = await facilitator.verify(other_token, wanted)
    assert (verdict.is_valid, verdict.invalid_reason) == (False, "permit2_token_mismatch")
    other_chain = wanted.model_copy(update={"network": "eip155:8453"})
    verdict = await facilitator.verify(signed(x402pay_chain, wanted), other_chain)
    assert (verdict.is_valid, verdict.invalid_reason) == (False, "invalid_network")


@pytest.mark.parametrize("route", ["GET /paid", "GET /paid-permit2", "POST /metered"])
def test_the_simulated_settlement_is_the_call_web3_would_make(x402pay_chain: Devnet, route: str) -> None:
    wanted = requirement(x402pay_chain, route)
    facilitator = LocalFacilitator(x402pay_chain.rpc_url, x402pay_chain.facilitator)
    auth = read_authorization(signed(x402pay_chain, wanted).payload, wanted.scheme)
    by_web3 = facilitator._settle_call(auth, wanted.asset, wanted.amount - 1, None)
    ours = _calldata.settlement(auth, wanted.asset, wanted.amount - 1)
    assert ours == {"to": by_web3.address, "data": by_web3._encode_transaction_data()}


@pytest.mark.parametrize("route", ["GET /paid", "GET /paid-permit2", "POST /metered"])
async def test_a_first_payment_is_verified_on_the_event_loop(
    x402pay_chain: Devnet, rpc: RecordingRpc, route: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the chain id and the token's code are known, a payment that passes needs no worker thread."""
    wanted = requirement(x402pay_chain, route)
    facilitator = LocalFacilitator(rpc.url, x402pay_chain.facilitator, verify_ttl=0)
    assert (await facilitator.verify(signed(x402pay_chain, wanted), wanted)).is_valid  # learns them, in a thread
    rpc.batches.clear()

    def no_thread(*args: object, **kwargs: object) -> None:
        raise AssertionError("verified in a worker thread")

    with monkeypatch.context() as patched:
        patched.setattr(anyio.to_thread, "run_sync", no_thread)
        assert (await facilitator.verify(signed(x402pay_chain, wanted), wanted)).is_valid
        late = signed(x402pay_chain, wanted, **{deadline_field(wanted): x402pay_chain.chain_time() + 3})
        refused = await facilitator.verify(late, wanted)  # refused by its terms, at chain time, here too
        assert (refused.is_valid, refused.invalid_reason) == (False, late_code(wanted))
    assert len(rpc.batches) == 2
    assert len(rpc.batches[0]) == len(rpc.batches[1]) >= 3
    short = wanted.model_copy(update={"amount": 10**15})
    refused = await facilitator.verify(signed(x402pay_chain, short), short)  # the thread says why
    assert refused.invalid_reason in ("insufficient_funds", "permit2_insufficient_balance")


def paid_by_permit2(wanted: PaymentRequirements) -> bool:
    return wanted.scheme == "upto" or wanted.extra_str("assetTransferMethod") == "permit2"


def deadline_field(wanted: PaymentRequirements) -> str:
    return "deadline" if paid_by_permit2(wanted) else "validBefore"


def late_code(wanted: PaymentRequirements) -> str:
    eip3009_code = "invalid_exact_evm_payload_authorization_valid_before"
    return "permit2_deadline_expired" if paid_by_permit2(wanted) else eip3009_code


def _block_failure_balance(devnet: Devnet, payer: str) -> list[tuple[str, list[Any]]]:
    """A batch of three: the latest block, a call that fails, `payer`'s USDC balance."""
    return [
        ("eth_getBlockByNumber", ["latest", False]),
        ("eth_call", [{"to": devnet.usdc, "data": "0xdeadbeef"}, "latest"]),
        ("eth_call", [_calldata.balance_of(devnet.usdc, payer), "latest"]),
    ]


async def test_an_async_batch_answers_in_order_on_a_kept_alive_connection(x402pay_chain: Devnet) -> None:
    rpc = AsyncHttpJsonRpc(x402pay_chain.rpc_url)
    payer = x402pay_chain.payers[0].address
    block, failed, balance = await rpc.batch(_block_failure_balance(x402pay_chain, payer))
    assert int(result_of(block)["timestamp"], 16) == x402pay_chain.chain_time()
    assert "error" in failed
    assert int(result_of(balance), 16) == usdc_balance(x402pay_chain, payer)
    (kept,) = rpc._idle
    await kept.stream.aclose()  # as if the node had closed it: the batch goes again on a fresh connection
    assert "result" in (await rpc.batch([("eth_blockNumber", [])]))[0]
    assert len(rpc._idle) == 1
    assert rpc._idle[0] is not kept
    await rpc.aclose()


def test_an_async_batch_never_uses_a_connection_of_another_event_loop(x402pay_chain: Devnet) -> None:
    rpc = AsyncHttpJsonRpc(x402pay_chain.rpc_url)
    for _ in range(2):
        assert "result" in asyncio.run(rpc.batch([("eth_blockNumber", [])]))[0]
    assert len(rpc._idle) == 1


async def test_an_async_rpc_endpoint_that_does_not_answer_is_an_oserror_that_hides_the_url() -> None:
    rpc = AsyncHttpJsonRpc("http://127.0.0.1:9/secret-api-key", timeout=1)
    with pytest.raises(ConnectionError, match="the RPC request failed") as raised:
        await rpc.batch([("eth_blockNumber", [])])
    assert "secret-api-key" not in str(raised.value)
    assert "secret-api-key" not in repr(rpc)


async def test_credentials_in_the_rpc_url_are_sent_as_basic_auth_from_async_code(rpc: RecordingRpc) -> None:
    host = rpc.url.removeprefix("http://")
    client = AsyncHttpJsonRpc(f"http://user:p%40ss@{host}")
    assert "result" in (await client.batch([("eth_blockNumber", [])]))[0]
    assert rpc.authorizations == ["Basic " + base64.b64encode(b"user:p@ss").decode()]
    assert client._idle == []  # the relay speaks HTTP/1.0: it closes each connection


def test_a_batch_answers_in_order_and_a_failed_call_in_place(x402pay_chain: Devnet) -> None:
    rpc = HttpJsonRpc(x402pay_chain.rpc_url)
    payer = x402pay_chain.payers[0].address
    block, failed, balance = rpc.batch(_block_failure_balance(x402pay_chain, payer))
    assert int(result_of(block)["timestamp"], 16) == x402pay_chain.chain_time()
    assert "error" in failed
    with pytest.raises(RpcAnswerError):
        result_of(failed)
    assert int(result_of(balance), 16) == usdc_balance(x402pay_chain, payer)
    rpc.close()


def test_an_rpc_endpoint_that_does_not_answer_is_an_oserror_that_hides_the_url() -> None:
    rpc = HttpJsonRpc("http://127.0.0.1:9/secret-api-key", timeout=1)
    with pytest.raises(ConnectionError, match="the RPC request failed") as raised:
        rpc.batch([("eth_blockNumber", [])])
    assert "secret-api-key" not in str(raised.value)
    assert "secret-api-key" not in repr(rpc)


def test_credentials_in_the_rpc_url_are_sent_as_basic_auth(rpc: RecordingRpc) -> None:
    host = rpc.url.removeprefix("http://")
    client = HttpJsonRpc(f"http://user:p%40ss@{host}")
    assert "result" in client.batch([("eth_blockNumber", [])])[0]
    assert rpc.authorizations == ["Basic " + base64.b64encode(b"user:p@ss").decode()]
    assert "p%40ss" not in repr(client)


async def test_a_ready_made_web3_batches_through_its_own_provider(x402pay_chain: Devnet, rpc: RecordingRpc) -> None:
    """Its headers and auth are the provider's own: the batch goes through web3's provider, one request still."""
    wanted = requirement(x402pay_chain, "GET /paid-permit2")
    facilitator = LocalFacilitator(web3_for(rpc.url), x402pay_chain.facilitator, verify_ttl=0)
    assert (await facilitator.verify(signed(x402pay_chain, wanted), wanted)).is_valid
    rpc.batches.clear()
    assert (await facilitator.verify(signed(x402pay_chain, wanted), wanted)).is_valid
    assert rpc.batches == [["eth_getBlockByNumber", "eth_call", "eth_call", "eth_call"]]
    short = requirement(x402pay_chain, "GET /paid-permit2").model_copy(update={"amount": 10**15})
    refused = await facilitator.verify(signed(x402pay_chain, short), short)
    assert (refused.is_valid, refused.invalid_reason) == (False, "permit2_insufficient_balance")
