"""x402pay paying x402pay through a payment channel, on anvil: `PaymentTransport` / `AsyncPaymentTransport` against
`PaymentMiddleware` + `LocalFacilitator` served by uvicorn on loopback, and `ChannelClaims` claiming and sweeping.

Both sides keep their own books: the payer's channel book in its ledger, the server's `ChannelStore`. Each test
checks them against each other and against the chain's ``channels(id)``: the receiver is paid exactly what the
payer's book says was charged, and after the payer syncs its book with the chain, escrow, spent and committed are
what the contract and the server's latest voucher say.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account.signers.local import LocalAccount
from paid_channel_support import PRICE, ChannelServer, Place, channel_server, counted_correctives

import x402pay
from x402pay._channel_admin import finalize, sync, withdraw
from x402pay._channel_chain import read_channel
from x402pay._protocol.models import SettleResponse
from x402pay.ledger import Ledger, Web3Chain
from x402pay.ledger._channels import ChannelRecord
from x402pay.server import _channel_rules as rules
from x402pay.testing import Devnet

pytestmark = pytest.mark.chain

DEPOSIT = 10 * PRICE  # the server's minDeposit hint, and the payer's cap (ten times max_per_request)
USES = [PRICE, 250, PRICE, 0, 999, PRICE, 1, PRICE, 700, PRICE, PRICE, 50]  # 12 requests, most below the maximum


def policy(devnet: Devnet) -> x402pay.SpendPolicy:
    return x402pay.SpendPolicy(max_per_request=PRICE, assets={devnet.usdc}, schemes=("batch-settlement",))


def paying(devnet: Devnet, payer: LocalAccount, ledger: Ledger) -> httpx.Client:
    wallet = x402pay.Wallet.from_key(bytes(payer.key))
    transport = x402pay.PaymentTransport(wallet=wallet, policy=policy(devnet), rpc_url=devnet.rpc_url, ledger=ledger)
    return httpx.Client(transport=transport, timeout=30)


@pytest.fixture
def ledger(place: Place) -> Iterator[Ledger]:
    """The payer's ledger, on each backend."""
    with place.ledger() as opened:
        yield opened


def only_channel(ledger: Ledger) -> ChannelRecord:
    (record,) = ledger.channels.all()
    return record


def identity(record: ChannelRecord) -> bytes:
    return bytes.fromhex(record.channel_id[2:])


def synced(ledger: Ledger, devnet: Devnet) -> ChannelRecord:
    """The payer's channel after its book is brought up to the chain (under the channel's lease), and the ledger's
    entries reconciled."""
    record, holder = only_channel(ledger), "test-" + secrets.token_hex(4)
    leased = ledger.channels.lease(record, holder, 60)
    assert leased is not None
    try:
        chain = read_channel(devnet.web3(), identity(record), int(record.config["withdrawDelay"]))
        record = sync(ledger.channels, holder, leased, chain)
    finally:
        ledger.channels.release(record.channel_id, holder)
    ledger.reconcile(Web3Chain(devnet.web3()))
    return record


def pay(client: httpx.Client, server: ChannelServer, uses: list[int], path: str = "/quote") -> list[x402pay.Payment]:
    payments = []
    for use in uses:
        response = client.get(server.url + path, params={"use": use})
        assert response.status_code == 200, response.text
        payment = x402pay.payment_of(response)
        assert payment is not None
        payments.append(payment)
    return payments


@pytest.mark.parametrize("path", ["/quote", "/quote-permit2"], ids=["eip3009", "permit2"])
async def test_one_deposit_many_vouchers_then_claim_and_sweep_pay_the_receiver_what_the_payer_booked(
    x402pay_chain: Devnet, payer: LocalAccount, ledger: Ledger, path: str
) -> None:
    devnet = x402pay_chain
    if path == "/quote-permit2":
        x402pay.Wallet.from_key(bytes(payer.key)).approve_permit2(devnet.web3(), devnet.usdc)
    with channel_server(devnet) as server, paying(devnet, payer, ledger) as client:
        payer_before, payee_before = server.balance(payer.address), server.balance(devnet.payee.address)
        payments = pay(client, server, USES, path)
        assert [payment.settled_amount for payment in payments] == USES  # what the app charged, below the maximum
        assert payments[0].transaction  # the deposit
        assert not any(payment.transaction for payment in payments[1:])  # vouchers: nothing on chain
        assert server.balance(payer.address) == payer_before - DEPOSIT  # one deposit paid for all twelve

        record = only_channel(ledger)
        served = server.middleware.channels.store.get(identity(record))
        assert served is not None
        assert (record.charged, record.signed_max) == (served.charged, served.signed_max) == (
            sum(USES), sum(USES[:-1]) + PRICE,
        )  # fmt: skip
        assert (record.deposited, record.escrow, record.committed) == (DEPOSIT, DEPOSIT, PRICE - USES[-1])

        claims = server.claims()
        assert [result.success for result in await claims.claim()] == [True]
        swept = await claims.sweep()
        assert [(result.success, result.amount) for result in swept] == [(True, record.charged)]
    assert server.balance(devnet.payee.address) == payee_before + record.charged  # exactly what the payer booked
    assert server.settlement().functions.channels(identity(record)).call() == [DEPOSIT, record.charged]

    books = synced(ledger, devnet)
    assert (books.chain_balance, books.chain_claimed) == (DEPOSIT, record.charged)
    assert (books.escrow, books.charged, books.committed) == (DEPOSIT, record.charged, PRICE - USES[-1])
    (deposit,) = ledger.entries()
    assert (deposit.amount, deposit.held) == (DEPOSIT, DEPOSIT)  # escrow stays held until it comes back


async def test_an_async_transport_pays_the_same_way(x402pay_chain: Devnet, payer: LocalAccount, ledger: Ledger) -> None:
    devnet = x402pay_chain
    wallet = x402pay.Wallet.from_key(bytes(payer.key))
    transport = x402pay.AsyncPaymentTransport(
        wallet=wallet, policy=policy(devnet), rpc_url=devnet.rpc_url, ledger=ledger
    )
    with channel_server(devnet) as server:
        payee_before = server.balance(devnet.payee.address)
        async with httpx.AsyncClient(transport=transport, timeout=30) as client:
            for use in (PRICE, 300, 20):
                response = await client.get(server.url + "/quote", params={"use": use})
                assert response.status_code == 200, response.text
                payment = x402pay.payment_of(response)
                assert payment is not None
                assert payment.settled_amount == use
            async with client.stream("GET", server.url + "/stream", params={"use": 70}) as streamed:
                await streamed.aread()
            payment = x402pay.payment_of(streamed)
            assert payment is not None
            assert payment.settled_amount == 70  # its in-band receipt, read by the async tap
            response = await client.get(server.url + "/quote", params={"use": 5})
            assert response.status_code == 200, response.text  # the voucher followed the stream's real charge
        record = only_channel(ledger)
        assert (record.charged, record.deposited) == (PRICE + 395, DEPOSIT)
        assert server.middleware.channels.store.get(identity(record)).charged == PRICE + 395  # type: ignore[union-attr]
        claims = server.claims()
        await claims.claim()
        await claims.sweep()
    assert server.balance(devnet.payee.address) == payee_before + PRICE + 395


async def test_an_async_ledger_books_the_channel_and_its_lease_queues_async_and_sync_payers(
    x402pay_chain: Devnet, payer: LocalAccount, place: Place
) -> None:
    devnet = x402pay_chain
    wallet = x402pay.Wallet.from_key(bytes(payer.key))
    async with await place.aledger() as ledger:
        transport = x402pay.AsyncPaymentTransport(
            wallet=wallet, policy=policy(devnet), rpc_url=devnet.rpc_url, ledger=ledger
        )
        with channel_server(devnet) as server, place.ledger() as beside_ledger:
            sync_client = paying(devnet, payer, beside_ledger)  # another connection to the same book
            payer_before, payee_before = server.balance(payer.address), server.balance(devnet.payee.address)
            async with httpx.AsyncClient(transport=transport, timeout=30) as client:

                async def fetch(use: int) -> int | None:
                    response = await client.get(server.url + "/quote", params={"use": use})
                    assert response.status_code == 200, response.text
                    payment = x402pay.payment_of(response)
                    return None if payment is None else payment.settled_amount

                def sync_fetch(use: int) -> int:
                    return sync_client.get(server.url + "/quote", params={"use": use}).status_code

                assert [await fetch(use) for use in (PRICE, 300, 20)] == [PRICE, 300, 20]  # a deposit, two vouchers
                together = [fetch(100 + number) for number in range(6)]
                beside = [asyncio.to_thread(sync_fetch, 200 + number) for number in range(2)]
                with sync_client:
                    results = await asyncio.gather(*together, *beside)
            # none refused as busy by the server: async and sync payers queued on the ledger's lease
            assert results == [100 + number for number in range(6)] + [200, 200]
            charged = PRICE + 320 + sum(100 + number for number in range(6)) + 401
            (record,) = await ledger.channels.all()
            served = server.middleware.channels.store.get(identity(record))
            assert served is not None
            assert (record.charged, record.signed_max) == (served.charged, served.signed_max)
            assert (record.charged, record.deposited, record.lease) == (charged, DEPOSIT, None)
            assert server.balance(payer.address) == payer_before - DEPOSIT  # one deposit for all eleven
            assert len(server.probe.calls) == 11
            (deposit,) = await ledger.entries()
            assert (deposit.amount, deposit.held) == (DEPOSIT, DEPOSIT)

            claims = server.claims()
            assert [result.success for result in await claims.claim()] == [True]
            swept = await claims.sweep()
            assert [(result.success, result.amount) for result in swept] == [(True, charged)]
            assert server.balance(devnet.payee.address) == payee_before + record.charged  # exactly what was booked
        assert server.settlement().functions.channels(identity(record)).call() == [DEPOSIT, charged]


async def test_concurrent_requests_on_one_channel_queue_on_the_payers_lease(
    x402pay_chain: Devnet, payer: LocalAccount, ledger: Ledger
) -> None:
    devnet = x402pay_chain
    with channel_server(devnet) as server, paying(devnet, payer, ledger) as client:
        pay(client, server, [PRICE])  # the deposit first

        def fetch(number: int) -> int:
            return client.get(server.url + "/quote", params={"use": 100 + number}).status_code

        with ThreadPoolExecutor(6) as pool:
            statuses = list(pool.map(fetch, range(6)))
        assert statuses == [200] * 6  # none refused as busy: they queued on the payer's side
        charged = PRICE + sum(100 + number for number in range(6))
        record = only_channel(ledger)
        served = server.middleware.channels.store.get(identity(record))
        assert served is not None
        assert record.charged == served.charged == charged
        assert record.signed_max == served.signed_max
        assert len(server.probe.calls) == 7


async def test_a_partial_then_a_full_refund_bring_the_unspent_escrow_back(
    x402pay_chain: Devnet, payer: LocalAccount, ledger: Ledger
) -> None:
    devnet = x402pay_chain
    with channel_server(devnet) as server, paying(devnet, payer, ledger) as client:
        pay(client, server, [PRICE, 400])
        charged = PRICE + 400
        before = server.balance(payer.address)
        partial = client.get(server.url + "/quote", headers={x402pay.CHANNEL_REFUND: str(3 * PRICE)})
        assert partial.status_code == 200, partial.text
        record = only_channel(ledger)
        assert server.balance(payer.address) == before + 3 * PRICE
        # the server claimed what it charged in the refund's transaction
        assert server.settlement().functions.channels(identity(record)).call() == [DEPOSIT - 3 * PRICE, charged]
        assert (record.refunded, record.charged, record.escrow) == (3 * PRICE, charged, DEPOSIT - 3 * PRICE)
        assert len(server.probe.calls) == 2  # a refund never reaches the app

        pay(client, server, [200])  # still open
        full = client.get(server.url + "/quote", headers={x402pay.CHANNEL_REFUND: "all"})
        assert full.status_code == 200, full.text
        charged += 200
        record = only_channel(ledger)
        assert server.balance(payer.address) == before + DEPOSIT - charged
        assert server.settlement().functions.channels(identity(record)).call() == [charged, charged]
        assert (record.refunded, record.charged, record.chain_balance) == (DEPOSIT - charged, charged, charged)
        assert server.middleware.channels.store.get(identity(record)) is None  # the server has nothing left to claim
        (deposit,) = ledger.entries()
        assert (deposit.amount, deposit.held) == (DEPOSIT, charged)  # the budgets hold what was spent, no more
        swept = await server.claims().sweep()
        assert [(result.success, result.amount) for result in swept] == [(True, charged)]


async def test_after_the_payers_store_is_wiped_a_corrective_402_restores_the_channel(
    x402pay_chain: Devnet, payer: LocalAccount, ledger: Ledger, tmp_path: Path
) -> None:
    devnet = x402pay_chain
    with channel_server(devnet) as server:
        with paying(devnet, payer, ledger) as client:
            pay(client, server, [PRICE, 300, 200])
        channel_id = only_channel(ledger).channel_id
        with Ledger.sqlite(tmp_path / "fresh.db") as fresh, paying(devnet, payer, fresh) as client:
            (payment,) = pay(client, server, [600])  # the chain says nothing claimed; the server proves 1,500
            assert payment.settled_amount == 600
            assert not payment.transaction  # no second deposit: the escrow on chain covers it
            record = only_channel(fresh)
        assert record.channel_id == channel_id
        assert (record.charged, record.signed_max, record.chain_balance, record.deposited) == (2_100, 2_500, DEPOSIT, 0)
        served = server.middleware.channels.store.get(identity(record))
        assert served is not None
        assert (served.charged, served.signed_max) == (2_100, 2_500)
        assert len(server.probe.calls) == 4  # the corrected attempt did not reach the app


async def test_a_charge_a_crash_lost_is_restored_by_the_servers_corrective_402(
    x402pay_chain: Devnet, payer: LocalAccount, ledger: Ledger
) -> None:
    """The charge an answer reported is committed without waiting for the disk: a crash may lose it. The voucher's
    ceiling, written durably before it left, is what the server proves in its corrective 402."""
    devnet = x402pay_chain
    with channel_server(devnet) as server, paying(devnet, payer, ledger) as client:
        pay(client, server, [PRICE, 300])
        record = only_channel(ledger)
        assert (record.charged, record.signed_max) == (PRICE + 300, 2 * PRICE)
        holder = "test-crash"
        assert ledger.channels.lease(record, holder, 60) is not None
        ledger.channels.update(record.channel_id, holder, charged=PRICE)  # as the crash left it: the 300 is lost
        ledger.channels.release(record.channel_id, holder)
        (payment,) = pay(client, server, [200])
        assert payment.settled_amount == 200
        record = only_channel(ledger)
        served = server.middleware.channels.store.get(identity(record))
        assert served is not None
        assert record.charged == served.charged == PRICE + 500
        assert len(server.probe.calls) == 3  # the corrected attempt did not reach the app


async def test_after_one_full_charge_and_a_wiped_store_the_servers_voucher_at_our_new_ceiling_is_believed(
    x402pay_chain: Devnet, payer: LocalAccount, ledger: Ledger, tmp_path: Path
) -> None:
    devnet = x402pay_chain
    with channel_server(devnet) as server:
        with paying(devnet, payer, ledger) as client:
            pay(client, server, [PRICE])
        # The fresh payer's first ceiling (nothing claimed + PRICE) is the very voucher the server holds: signed
        # before, by the payer that lost its store, so it proves the charge.
        with Ledger.sqlite(tmp_path / "fresh.db") as fresh, paying(devnet, payer, fresh) as client:
            (payment,) = pay(client, server, [PRICE])
            assert payment.settled_amount == PRICE
            record = only_channel(fresh)
        assert (record.charged, record.signed_max) == (2 * PRICE, 2 * PRICE)


async def test_a_withdrawal_the_manager_meets_in_time_leaves_the_payer_only_what_was_not_charged(
    x402pay_chain: Devnet, payer: LocalAccount, ledger: Ledger
) -> None:
    devnet, wallet = x402pay_chain, x402pay.Wallet.from_key(bytes(payer.key))
    with channel_server(devnet) as server, paying(devnet, payer, ledger) as client:
        pay(client, server, [PRICE, PRICE, 500])
        charged, channel_id = 2_500, only_channel(ledger).channel_id
        tx_hash, record = withdraw(ledger.channels, devnet.web3(), wallet, channel_id)
        assert tx_hash is not None
        assert record.state == "withdrawing"
        with pytest.raises(x402pay.errors.PaymentRejected, match="withdrawing"):
            client.get(server.url + "/quote")  # nothing more is signed on a channel being withdrawn

        claimed = await server.claims().watch()  # the manager sees the withdrawal and claims at once
        assert [result.success for result in claimed] == [True]
        devnet.increase_time(int(record.config["withdrawDelay"]) + 1)
        before = server.balance(payer.address)
        _, record = finalize(ledger.channels, devnet.web3(), wallet, channel_id)
        assert server.balance(payer.address) == before + DEPOSIT - charged  # the withdrawal takes only the rest
        assert server.settlement().functions.channels(identity(record)).call() == [charged, charged]
        assert (record.state, record.withdrawn, record.charged) == ("closed", DEPOSIT - charged, charged)
        assert [entry.held for entry in ledger.entries()] == [charged]
        swept = await server.claims().sweep()
        assert [(result.success, result.amount) for result in swept] == [(True, charged)]


async def test_a_claim_after_a_finalized_withdrawal_reverts_and_the_payer_keeps_everything(
    x402pay_chain: Devnet, payer: LocalAccount, ledger: Ledger
) -> None:
    devnet, wallet = x402pay_chain, x402pay.Wallet.from_key(bytes(payer.key))
    with channel_server(devnet) as server, paying(devnet, payer, ledger) as client:
        pay(client, server, [PRICE, PRICE])
        channel_id = only_channel(ledger).channel_id
        withdraw(ledger.channels, devnet.web3(), wallet, channel_id)
        devnet.increase_time(int(only_channel(ledger).config["withdrawDelay"]) + 1)
        before = server.balance(payer.address)
        _, record = finalize(ledger.channels, devnet.web3(), wallet, channel_id)
        assert server.balance(payer.address) == before + DEPOSIT

        late = await server.claims().claim()  # the server slept through the delay
        assert [result.success for result in late] == [False]
        assert server.settlement().functions.channels(identity(record)).call() == [0, 0]
        assert (record.state, record.withdrawn, record.escrow) == ("closed", DEPOSIT, 0)
        assert [entry.held for entry in ledger.entries()] == [0]


async def test_a_streamed_channel_answer_is_booked_at_what_its_in_band_receipt_says(
    x402pay_chain: Devnet, payer: LocalAccount, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    devnet = x402pay_chain
    with channel_server(devnet) as server, paying(devnet, payer, ledger) as client:
        corrected = counted_correctives(server, monkeypatch)
        pay(client, server, [PRICE])  # the deposit (a stream may carry it too: the next test)
        charged = PRICE
        for use in (400, 300):
            with client.stream("GET", server.url + "/stream", params={"use": use}) as response:
                assert response.status_code == 200
                payment = x402pay.payment_of(response)
                assert payment is not None
                assert payment.settled_amount is None  # its headers left before its charge ...
                assert only_channel(ledger).charged == charged + PRICE  # ... booked at the voucher's most ...
                body = response.read().decode()
            charged += use
            assert "compose.receipt" not in body  # the transport read the in-band receipt (and took it out)
            assert body.rstrip().endswith("data: [DONE]")
            assert payment.mismatch is None
            assert payment.settled_amount == use  # ... until its receipt came
            assert only_channel(ledger).charged == charged
        (after,) = pay(client, server, [100])
        assert after.settled_amount == 100
        assert corrected == []  # each voucher followed the server's charge: no corrective round trip
        record = only_channel(ledger)
        served = server.middleware.channels.store.get(identity(record))
        assert served is not None
        assert record.charged == served.charged == PRICE + 800
        assert (record.state, record.deposited) == ("open", DEPOSIT)
        assert server.probe.calls == ["/quote", "/stream", "/stream", "/quote"]


async def test_a_channel_stream_left_before_its_receipt_stays_booked_at_its_voucher_until_the_server_proves_less(
    x402pay_chain: Devnet, payer: LocalAccount, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    devnet = x402pay_chain
    with channel_server(devnet) as server, paying(devnet, payer, ledger) as client:
        corrected = counted_correctives(server, monkeypatch)
        pay(client, server, [PRICE])
        with client.stream("GET", server.url + "/stream", params={"use": 400}) as response:
            assert response.status_code == 200
            payment = x402pay.payment_of(response)
        assert payment is not None
        assert payment.settled_amount is None  # never read: no receipt
        assert only_channel(ledger).charged == 2 * PRICE
        (after,) = pay(client, server, [100])
        assert after.settled_amount == 100
        # the stream's real charge came back in one corrective 402 proving our own voucher
        assert corrected == [rules.CUMULATIVE_MISMATCH]
        record = only_channel(ledger)
        served = server.middleware.channels.store.get(identity(record))
        assert served is not None
        assert record.charged == served.charged == PRICE + 500
        assert (record.state, record.deposited) == ("open", DEPOSIT)  # not taken for a lie: nothing withdrawn


async def test_a_channels_first_request_may_be_a_stream(
    x402pay_chain: Devnet, payer: LocalAccount, ledger: Ledger
) -> None:
    devnet = x402pay_chain
    with channel_server(devnet) as server, paying(devnet, payer, ledger) as client:
        payer_before = server.balance(payer.address)
        with client.stream("GET", server.url + "/stream", params={"use": 400}) as response:  # carries the deposit
            assert response.status_code == 200
            assert response.read().decode().rstrip().endswith("data: [DONE]")
        payment = x402pay.payment_of(response)
        assert payment is not None
        assert payment.mismatch is None
        assert server.balance(payer.address) == payer_before - DEPOSIT
        (after,) = pay(client, server, [100])
        assert after.settled_amount == 100
        record = only_channel(ledger)
        served = server.middleware.channels.store.get(identity(record))
        assert served is not None
        assert record.charged == served.charged == 500
        assert (record.state, record.deposited, record.chain_balance) == ("open", DEPOSIT, DEPOSIT)
        assert server.probe.calls == ["/stream", "/quote"]


async def test_a_deposit_the_facilitator_fails_to_send_is_refused_before_the_app(
    x402pay_chain: Devnet, payer: LocalAccount, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    devnet = x402pay_chain
    with channel_server(devnet) as server, paying(devnet, payer, ledger) as client:
        settle = server.facilitator.settle

        async def failing(payload: Any, requirement: Any) -> Any:
            if payload.payload.get("type") == "deposit":
                return SettleResponse(success=False, network=devnet.network, error_reason="unexpected_settle_error")
            return await settle(payload, requirement)

        monkeypatch.setattr(server.facilitator, "settle", failing)
        payer_before = server.balance(payer.address)
        with pytest.raises(x402pay.errors.PaymentRejected, match="refused the channel payment"):
            client.get(server.url + "/quote")
        assert server.probe.calls == []  # no content for a deposit that did not land
        assert server.balance(payer.address) == payer_before
        (deposit,) = ledger.entries()
        assert deposit.held == DEPOSIT  # a deposit sent and refused may still land: held until reconcile decides


async def test_an_answer_the_app_failed_is_not_charged_and_the_channel_stays_open(
    x402pay_chain: Devnet, payer: LocalAccount, ledger: Ledger
) -> None:
    devnet = x402pay_chain
    with channel_server(devnet) as server, paying(devnet, payer, ledger) as client:
        pay(client, server, [PRICE])
        failed = client.get(server.url + "/quote", params={"fail": "1"})
        assert failed.status_code == 500  # the app's own answer, handed back: no lie, no fraud mark
        payment = x402pay.payment_of(failed)
        assert payment is not None
        assert payment.status is x402pay.PaymentStatus.UNSETTLED  # charged nothing; its voucher stays committed
        record = only_channel(ledger)
        assert (record.state, record.charged, record.signed_max) == ("open", PRICE, 2 * PRICE)
        pay(client, server, [PRICE, 300])  # the next voucher starts from what was charged, as the server's does
        record = only_channel(ledger)
        served = server.middleware.channels.store.get(identity(record))
        assert served is not None
        assert (record.charged, record.state) == (served.charged, "open") == (2 * PRICE + 300, "open")
        claims = server.claims()
        assert all(claimed.success for claimed in await claims.claim())
        await claims.sweep()
        assert read_channel(devnet.web3(), identity(record), 900).total_claimed == 2 * PRICE + 300


@pytest.mark.parametrize(
    ("timeout", "lease"), [(httpx.Timeout(30), 2 * 4 * 30 + 60), (httpx.Timeout(None), 3_600)], ids=["30s", "none"]
)
def test_a_request_holds_its_channel_for_as_long_as_its_timeouts_let_it_wait(
    x402pay_chain: Devnet, payer: LocalAccount, ledger: Ledger, timeout: httpx.Timeout, lease: int
) -> None:
    """Two sends (a corrective 402 asks for a second) within connect + write + read + pool, and a minute: a request
    that waits long for its answer does not lose its channel to the next one meanwhile (none: at most an hour)."""
    with channel_server(x402pay_chain) as server, paying(x402pay_chain, payer, ledger) as client:
        client.timeout = timeout
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(client.get, server.url + "/quote", params={"use": 1, "hold": 1})
            assert server.probe.entered.wait(20)
            during = only_channel(ledger)
            server.probe.gate.set()
            assert pending.result().status_code == 200
        after = only_channel(ledger)
    assert during.lease is not None
    assert lease - 10 <= during.lease_until - time.time() <= lease
    assert (after.lease, after.lease_until) == (None, 0)  # given back with the answer


class Counting(httpx.HTTPTransport):
    """The wire below the payment transport: the status of every answer, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.statuses: list[int] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        self.statuses.append(response.status_code)
        return response


def prepaying(devnet: Devnet, payer: LocalAccount, ledger: Ledger, wire: Counting) -> x402pay.PaymentTransport:
    """A transport with `prepay=True` over `wire`."""
    wallet = x402pay.Wallet.from_key(bytes(payer.key))
    return x402pay.PaymentTransport(wallet=wallet, policy=policy(devnet), rpc_url=devnet.rpc_url, ledger=ledger,
                                    prepay=True, inner=wire)  # fmt: skip


def test_with_prepay_a_channel_route_costs_one_round_trip_after_its_first_call(
    x402pay_chain: Devnet, payer: LocalAccount, ledger: Ledger
) -> None:
    devnet = x402pay_chain
    wire = Counting()
    transport = prepaying(devnet, payer, ledger, wire)
    with channel_server(devnet) as server, httpx.Client(transport=transport, timeout=30) as client:
        payments = pay(client, server, [PRICE, 300, 20, 7])
        assert wire.statuses == [402, 200, 200, 200, 200]  # the first call learns the price; then a voucher at once
        assert [payment.prepaid for payment in payments] == [False, True, True, True]
        assert [payment.settled_amount for payment in payments] == [PRICE, 300, 20, 7]
        record = only_channel(ledger)
        served = server.middleware.channels.store.get(identity(record))
        assert served is not None
        assert record.charged == served.charged == PRICE + 327
        assert server.probe.calls == ["/quote"] * 4


def test_a_prepaid_voucher_on_terms_the_route_no_longer_offers_is_paid_again_from_the_new_challenge(
    x402pay_chain: Devnet, payer: LocalAccount, ledger: Ledger
) -> None:
    devnet = x402pay_chain
    wire = Counting()
    transport = prepaying(devnet, payer, ledger, wire)
    with httpx.Client(transport=transport, timeout=30) as client:
        with channel_server(devnet) as first:
            pay(client, first, [PRICE, 300])
            port = int(first.url.rsplit(":", 1)[1])
        with channel_server(devnet, port=port) as replaced:  # the same route, another receiverAuthorizer
            wire.statuses.clear()
            (payment,) = pay(client, replaced, [100])
            # the remembered terms are refused with a 402 offering the new ones, which are paid (a new channel)
            assert (wire.statuses, payment.prepaid) == ([402, 200], False)
            assert payment.settled_amount == 100
            wire.statuses.clear()
            (again,) = pay(client, replaced, [50])
            # an origin that refused a pre-payment is not pre-paid again for a while: refusing collects no signatures
            assert (wire.statuses, again.prepaid) == ([402, 200], False)
            assert replaced.probe.calls == ["/quote", "/quote"]
    assert sorted(record.charged for record in ledger.channels.all()) == [150, PRICE + 300]
