"""x402pay's PaymentTransport pays the official SDK's batch-settlement server and facilitator, on anvil.

Deposits (EIP-3009 and Permit2) and many vouchers, charges below the maximum, then the SDK's own channel manager
claims and sweeps: the receiver's balance rises by exactly what our channel book says was charged, and the chain's
``channels(id)`` agrees with our book. Requests on one channel from many threads queue on its lease.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from channel_support import Channels
from eth_account.signers.local import LocalAccount
from official_stack import DELAY, METERED, PRICE, OfficialStack, official_server
from web3 import Web3

import x402pay
from x402pay._channel_admin import finalize, withdraw
from x402pay.ledger import Ledger
from x402pay.ledger._channels import ChannelRecord
from x402pay.testing import Devnet

pytestmark = pytest.mark.chain


def transport(devnet: Devnet, payer: LocalAccount, ledger: Ledger, **options: Any) -> x402pay.PaymentTransport:
    spend = x402pay.SpendPolicy(max_per_request=PRICE, assets={devnet.usdc}, schemes=("batch-settlement",))
    wallet = x402pay.Wallet.from_key(bytes(payer.key))
    return x402pay.PaymentTransport(wallet=wallet, policy=spend, rpc_url=devnet.rpc_url, ledger=ledger, **options)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger.sqlite(tmp_path / "ledger.db") as opened:
        yield opened


def only_channel(ledger: Ledger) -> ChannelRecord:
    (record,) = ledger.channels.all()
    return record


@pytest.mark.parametrize("method", ["eip3009", "permit2"])
def test_deposits_vouchers_and_a_charge_below_the_maximum_then_the_official_claim_and_sweep(
    channels: Channels, payer: LocalAccount, ledger: Ledger, method: str
) -> None:
    devnet = channels.devnet
    if method == "permit2":
        x402pay.Wallet.from_key(bytes(payer.key)).approve_permit2(devnet.web3(), devnet.usdc)
    payer_before, payee_before = channels.balance_of(payer.address), channels.balance_of(devnet.payee.address)
    with official_server(devnet, method) as stack, httpx.Client(transport=transport(devnet, payer, ledger)) as client:
        for path in ["/report"] * 9 + ["/metered"] * 4 + ["/report"] * 2:
            response = client.get(stack.url + path)
            assert response.status_code == 200, response.text
            payment = x402pay.payment_of(response)
            assert payment is not None
            assert payment.settled_amount == (METERED if path == "/metered" else PRICE)
        record = only_channel(ledger)
        charged = 11 * PRICE + 4 * METERED
        # minDeposit hint 10 x price = the default cap (10 x max_per_request): 15 requests took two deposits
        assert (record.charged, record.deposited, record.chain_balance) == (charged, 20 * PRICE, 20 * PRICE)
        assert record.signed_max == charged  # the last request was charged its whole voucher
        assert channels.balance_of(payer.address) == payer_before - 20 * PRICE
        channel_id = bytes.fromhex(record.channel_id[2:])
        assert channels.settlement.functions.channels(channel_id).call() == [20 * PRICE, 0]
        claim_and_sweep(stack)
    assert channels.settlement.functions.channels(channel_id).call() == [20 * PRICE, charged]
    assert channels.balance_of(devnet.payee.address) == payee_before + charged


def claim_and_sweep(stack: OfficialStack) -> None:
    manager = stack.manager()
    claims = manager.claim()
    assert claims, "the official manager found no voucher to claim"
    manager.settle()


def test_concurrent_requests_on_one_channel_queue_and_never_sign_conflicting_ceilings(
    channels: Channels, payer: LocalAccount, ledger: Ledger
) -> None:
    devnet = channels.devnet
    receipts: list[int] = []
    paying = transport(devnet, payer, ledger, on_receipt=lambda payment: receipts.append(payment.settled_amount))
    with official_server(devnet) as stack, httpx.Client(transport=paying) as client:
        assert client.get(stack.url + "/report").status_code == 200  # the deposit, first

        def fetch(_: int) -> int:
            return client.get(stack.url + "/report").status_code

        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(fetch, range(8)))
        assert statuses == [200] * 8  # none was refused as busy: they queued on our side
        record = only_channel(ledger)
        assert record.charged == record.signed_max == 9 * PRICE
        assert receipts == [PRICE] * 9  # on_receipt heard of every charge
        claim_and_sweep(stack)
        channel_id = bytes.fromhex(record.channel_id[2:])
        assert channels.settlement.functions.channels(channel_id).call() == [10 * PRICE, 9 * PRICE]


def test_after_our_store_is_wiped_the_servers_corrective_402_is_believed_because_it_proves_our_voucher(
    channels: Channels, payer: LocalAccount, ledger: Ledger, tmp_path: Path
) -> None:
    devnet = channels.devnet
    with official_server(devnet) as stack:
        with httpx.Client(transport=transport(devnet, payer, ledger)) as client:
            for _ in range(3):
                assert client.get(stack.url + "/report").status_code == 200
        channel_id = only_channel(ledger).channel_id
        with Ledger.sqlite(tmp_path / "fresh.db") as fresh:  # a new machine: nothing but the chain and the key
            with httpx.Client(transport=transport(devnet, payer, fresh)) as client:
                response = client.get(stack.url + "/report")
                assert response.status_code == 200, response.text
            record = only_channel(fresh)
            assert record.channel_id == channel_id
            # the chain said nothing was claimed; the server proved (with our own voucher) that 3 were charged
            assert (record.charged, record.signed_max, record.chain_balance) == (4 * PRICE, 4 * PRICE, 10 * PRICE)
            assert record.deposited == 0  # no second deposit: the escrow on chain covered it


def test_withdraw_waits_the_delay_and_finalizes_and_a_claim_after_it_finds_nothing_left(
    channels: Channels, payer: LocalAccount, ledger: Ledger
) -> None:
    devnet = channels.devnet
    wallet = x402pay.Wallet.from_key(bytes(payer.key))
    with official_server(devnet) as stack, httpx.Client(transport=transport(devnet, payer, ledger)) as client:
        for _ in range(3):
            assert client.get(stack.url + "/report").status_code == 200
        channel_id = only_channel(ledger).channel_id
        identity = bytes.fromhex(channel_id[2:])
        payer_before = channels.balance_of(payer.address)
        tx_hash, record = withdraw(ledger.channels, devnet.web3(), wallet, channel_id)
        assert tx_hash is not None
        assert record.state == "withdrawing"
        assert record.withdraw_after is not None
        with pytest.raises(x402pay.errors.PaymentRejected, match="withdrawing"):
            client.get(stack.url + "/report")  # nothing more is signed on a channel being withdrawn
        with pytest.raises(x402pay.SigningError, match="WithdrawDelayNotElapsed"):  # too early
            finalize(ledger.channels, devnet.web3(), wallet, channel_id)
        devnet.increase_time(DELAY + 1)
        _, record = finalize(ledger.channels, devnet.web3(), wallet, channel_id)
        assert record.state == "closed"
        assert channels.settlement.functions.channels(identity).call() == [0, 0]
        assert channels.balance_of(payer.address) == payer_before + 10 * PRICE  # all of it: the server never claimed
        assert (record.withdrawn, record.escrow, record.chain_balance) == (10 * PRICE, 0, 0)
        assert [entry.held for entry in ledger.entries()] == [0]  # all of the deposit came back
        claim_exceeds_balance = Web3.keccak(text="ClaimExceedsBalance()")[:4].to_0x_hex()
        with pytest.raises(RuntimeError, match=claim_exceeds_balance):  # the official manager's late claim
            stack.manager().claim()
        assert channels.settlement.functions.channels(identity).call() == [0, 0]
        # A closed channel opens again with a new deposit (dated by the chain's clock, which the test moved on).
        with httpx.Client(transport=transport(devnet, payer, ledger, clock=devnet.chain_time)) as later:
            response = later.get(stack.url + "/report")
        assert response.status_code == 200, response.text
        record = only_channel(ledger)
        assert (record.state, record.deposited, record.charged) == ("open", 20 * PRICE, 4 * PRICE)
        assert channels.settlement.functions.channels(identity).call() == [10 * PRICE, 0]


def test_a_partial_then_a_full_refund_bring_the_unspent_escrow_back(
    channels: Channels, payer: LocalAccount, ledger: Ledger
) -> None:
    devnet = channels.devnet
    with official_server(devnet) as stack, httpx.Client(transport=transport(devnet, payer, ledger)) as client:
        for _ in range(3):
            assert client.get(stack.url + "/report").status_code == 200
        payer_before = channels.balance_of(payer.address)
        partial = client.get(stack.url + "/report", headers={x402pay.CHANNEL_REFUND: str(2 * PRICE)})
        assert partial.status_code == 200, partial.text
        record = only_channel(ledger)
        identity = bytes.fromhex(record.channel_id[2:])
        # the server claims what it charged and refunds what was asked
        assert channels.settlement.functions.channels(identity).call() == [8 * PRICE, 3 * PRICE]
        assert channels.balance_of(payer.address) == payer_before + 2 * PRICE
        assert (record.refunded, record.chain_balance, record.charged, record.escrow) == (
            2 * PRICE, 8 * PRICE, 3 * PRICE, 8 * PRICE,
        )  # fmt: skip
        assert [entry.held for entry in ledger.entries()] == [8 * PRICE]
        assert client.get(stack.url + "/report").status_code == 200  # still open: one more paid request
        full = client.get(stack.url + "/report", headers={x402pay.CHANNEL_REFUND: "all"})
        assert full.status_code == 200, full.text
        record = only_channel(ledger)
        assert channels.settlement.functions.channels(identity).call() == [4 * PRICE, 4 * PRICE]
        assert channels.balance_of(payer.address) == payer_before + 6 * PRICE
        assert (record.refunded, record.charged, record.chain_balance) == (6 * PRICE, 4 * PRICE, 4 * PRICE)
        (deposit,) = ledger.entries()
        assert (deposit.amount, deposit.held) == (10 * PRICE, 4 * PRICE)  # the budgets hold what was spent, no more


async def test_an_async_transport_without_ledger_or_rpc_pays_through_a_channel_kept_in_memory(
    channels: Channels, payer: LocalAccount
) -> None:
    devnet = channels.devnet
    policy = x402pay.SpendPolicy(max_per_request=PRICE, assets={devnet.usdc}, schemes=("batch-settlement",))
    transport = x402pay.AsyncPaymentTransport(wallet=x402pay.Wallet.from_key(bytes(payer.key)), policy=policy)
    payee_before = channels.balance_of(devnet.payee.address)
    with official_server(devnet) as stack:
        async with httpx.AsyncClient(transport=transport) as client:
            for path in ["/report", "/metered", "/report"]:
                response = await client.get(stack.url + path)
                assert response.status_code == 200, response.text
        (record,) = transport._engine.channels.all()
        assert (record.deposited, record.charged, record.signed_max) == (
            10 * PRICE,
            2 * PRICE + METERED,
            2 * PRICE + METERED,
        )
        claim_and_sweep(stack)
    assert channels.balance_of(devnet.payee.address) == payee_before + 2 * PRICE + METERED


def test_a_cold_start_takes_what_the_chain_shows_claimed_as_charged_and_needs_no_corrective_402(
    channels: Channels, payer: LocalAccount, ledger: Ledger, tmp_path: Path
) -> None:
    devnet = channels.devnet
    statuses: list[int] = []

    class Counting(httpx.HTTPTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            response = super().handle_request(request)
            statuses.append(response.status_code)
            return response

    with official_server(devnet) as stack:
        with httpx.Client(transport=transport(devnet, payer, ledger)) as client:
            for _ in range(3):
                assert client.get(stack.url + "/report").status_code == 200
        claim_and_sweep(stack)  # the chain now shows 3 prices claimed
        spend = x402pay.SpendPolicy(max_per_request=PRICE, assets={devnet.usdc}, schemes=("batch-settlement",))
        with Ledger.sqlite(tmp_path / "fresh.db") as fresh:
            counted = x402pay.PaymentTransport(wallet=x402pay.Wallet.from_key(bytes(payer.key)), policy=spend,
                                               rpc_url=devnet.rpc_url, ledger=fresh, inner=Counting())  # fmt: skip
            with httpx.Client(transport=counted) as client:
                assert client.get(stack.url + "/report").status_code == 200
            record = only_channel(fresh)
    assert (record.charged, record.signed_max, record.chain_claimed) == (4 * PRICE, 4 * PRICE, 3 * PRICE)
    assert statuses == [402, 200]  # the challenge, then the paid answer: no corrective 402
