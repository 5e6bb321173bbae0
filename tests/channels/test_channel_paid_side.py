"""The paid side of payment channels: the official SDK's batch-settlement client pays x402pay's PaymentMiddleware and
LocalFacilitator on anvil (real uvicorn on loopback), and ChannelClaims claims, sweeps and refunds."""

from __future__ import annotations

import asyncio
from pathlib import Path

import anyio.to_thread
import pytest
from channel_support import transact
from paid_channel_support import PRICE, ChannelServer, channel_server, official_http, official_scheme
from x402.http.utils import decode_payment_response_header
from x402.mechanisms.evm.batch_settlement.client import RefundOptions

from x402pay.server._channel_rules import CHANNEL_BUSY
from x402pay.testing import Devnet

pytestmark = pytest.mark.chain

USES = [PRICE, 250, PRICE, 0, 999, PRICE, 1, PRICE, 700, PRICE, PRICE, 50]  # 12 requests, most below the maximum


async def pay_requests(server: ChannelServer, tmp_path: Path, path: str, uses: list[int]) -> list[dict[str, object]]:
    """`uses` paid requests from the payer's official client; the PAYMENT-RESPONSE of each."""
    devnet = server.devnet
    scheme = official_scheme(devnet, devnet.payers[0], tmp_path)
    answers = []
    async with official_http(devnet, scheme, server.url) as http:
        for use in uses:
            response = await http.get(path, params={"use": use})
            assert response.status_code == 200, response.text
            answers.append(decode_payment_response_header(response.headers["payment-response"]).model_dump())
    return answers


def channel_of(answers: list[dict[str, object]]) -> bytes:
    extra = answers[0]["extra"]
    assert isinstance(extra, dict)
    return bytes.fromhex(extra["channelState"]["channelId"][2:])


@pytest.mark.parametrize("path", ["/quote", "/quote-permit2"], ids=["eip3009", "permit2"])
async def test_one_deposit_many_vouchers_then_claim_and_sweep(x402pay_chain: Devnet, tmp_path: Path, path: str) -> None:
    devnet = x402pay_chain
    with channel_server(devnet) as server:
        payee_before = server.balance(devnet.payee.address)
        answers = await pay_requests(server, tmp_path, path, USES)
        deposit = 10 * PRICE  # the SDK deposits the price's minDeposit hint

        assert answers[0]["transaction"] and answers[0]["amount"] == str(deposit)
        assert all(answer["transaction"] == "" for answer in answers[1:])  # vouchers: no transaction
        assert [answer["extra"]["chargedAmount"] for answer in answers] == [str(use) for use in USES]  # type: ignore[index]
        assert answers[0]["extra"]["channelState"]["balance"] == str(deposit)  # type: ignore[index]
        assert len(server.probe.calls) == len(USES)
        channel_id = channel_of(answers)
        record = server.middleware.channels.store.get(channel_id)
        assert record is not None
        assert (record.charged, record.signed_max) == (sum(USES), sum(USES[:-1]) + PRICE)
        assert server.settlement().functions.channels(channel_id).call() == [deposit, 0]  # nothing claimed yet

        claims = server.claims()
        claimed = await claims.claim()
        assert [result.success for result in claimed] == [True]
        assert server.settlement().functions.channels(channel_id).call() == [deposit, sum(USES)]
        swept = await claims.sweep()
        assert [result.success for result in swept] == [True]
        assert swept[0].amount == sum(USES)
        assert server.balance(devnet.payee.address) == payee_before + sum(USES)  # exactly what was charged
        assert await claims.claim() == []  # nothing left unclaimed


async def test_partial_then_full_refund(x402pay_chain: Devnet, tmp_path: Path) -> None:
    devnet, payer = x402pay_chain, x402pay_chain.payers[0]
    with channel_server(devnet) as server:
        answers = await pay_requests(server, tmp_path, "/quote", [PRICE, 400])
        channel_id, charged, deposit = channel_of(answers), PRICE + 400, 10 * PRICE
        scheme = official_scheme(devnet, payer, tmp_path)
        url = server.url + "/quote"
        before = server.balance(payer.address)

        partial = await anyio.to_thread.run_sync(lambda: scheme.refund(url, RefundOptions(amount="3000")))
        assert partial.success, partial
        assert int(partial.amount or 0) == 3_000
        assert server.balance(payer.address) == before + 3_000
        # The refund claimed what was charged in the same transaction.
        assert server.settlement().functions.channels(channel_id).call() == [deposit - 3_000, charged]
        assert server.settlement().functions.refundNonce(channel_id).call() == 1
        assert len(server.probe.calls) == 2  # a refund never reaches the app

        full = await anyio.to_thread.run_sync(lambda: scheme.refund(url))
        assert full.success, full
        assert server.balance(payer.address) == before + deposit - charged
        assert server.settlement().functions.channels(channel_id).call() == [charged, charged]
        assert server.middleware.channels.store.get(channel_id) is None  # nothing left to claim: forgotten
        swept = await server.claims().sweep()
        assert [(result.success, result.amount) for result in swept] == [(True, charged)]


async def test_a_concurrent_request_on_a_busy_channel_is_refused(x402pay_chain: Devnet, tmp_path: Path) -> None:
    devnet = x402pay_chain
    with channel_server(devnet) as server:
        await pay_requests(server, tmp_path, "/quote", [PRICE])  # the deposit
        scheme = official_scheme(devnet, devnet.payers[0], tmp_path)
        async with official_http(devnet, scheme, server.url) as http:
            held = asyncio.create_task(http.get("/quote", params={"hold": 1}))
            await anyio.to_thread.run_sync(server.probe.entered.wait, 20)
            busy = await http.get("/quote")
            server.probe.gate.set()
            first = await held
        assert first.status_code == 200, first.text
        assert busy.status_code == 402
        assert busy.json()["error"] == CHANNEL_BUSY
        assert len(server.probe.calls) == 2  # the refused request never reached the app


async def test_a_client_that_lost_its_store_is_corrected_and_resumes(x402pay_chain: Devnet, tmp_path: Path) -> None:
    devnet = x402pay_chain
    with channel_server(devnet) as server:
        answers = await pay_requests(server, tmp_path / "before", "/quote", [PRICE, 300, 200])
        channel_id = channel_of(answers)
        # A fresh store: the client starts from the chain (nothing claimed), the server knows 1,500 was charged.
        after = await pay_requests(server, tmp_path / "after", "/quote", [600])
        assert after[0]["transaction"] == ""  # no second deposit
        assert after[0]["extra"]["channelState"]["chargedCumulativeAmount"] == "2100"  # type: ignore[index]
        record = server.middleware.channels.store.get(channel_id)
        assert record is not None
        assert (record.charged, record.signed_max) == (2_100, 2_500)
        assert len(server.probe.calls) == 4  # the corrected attempt did not reach the app


async def test_claims_meet_a_withdrawal_before_it_can_be_finalized(x402pay_chain: Devnet, tmp_path: Path) -> None:
    devnet, payer = x402pay_chain, x402pay_chain.payers[0]
    with channel_server(devnet) as server:
        answers = await pay_requests(server, tmp_path, "/quote", [PRICE, PRICE, 500])
        channel_id, charged, deposit = channel_of(answers), 2_500, 10 * PRICE
        record = server.middleware.channels.store.get(channel_id)
        assert record is not None
        functions = server.settlement().functions
        transact(functions.initiateWithdraw(record.config.as_abi(), deposit), payer.address)

        claims = server.claims()
        claimed = await claims.watch()  # sees the pending withdrawal and claims at once
        assert [result.success for result in claimed] == [True]
        assert functions.channels(channel_id).call() == [deposit, charged]

        devnet.increase_time(record.config.withdraw_delay + 1)
        before = server.balance(payer.address)
        transact(functions.finalizeWithdraw(record.config.as_abi()), payer.address)
        assert server.balance(payer.address) == before + deposit - charged  # the withdrawal takes only the rest
        assert [(r.success, r.amount) for r in await claims.sweep()] == [(True, charged)]


async def test_a_claim_after_a_finalized_withdrawal_reverts(x402pay_chain: Devnet, tmp_path: Path) -> None:
    devnet, payer = x402pay_chain, x402pay_chain.payers[0]
    with channel_server(devnet) as server:
        answers = await pay_requests(server, tmp_path, "/quote", [PRICE, PRICE])
        channel_id, deposit = channel_of(answers), 10 * PRICE
        record = server.middleware.channels.store.get(channel_id)
        assert record is not None
        functions = server.settlement().functions
        transact(functions.initiateWithdraw(record.config.as_abi(), deposit), payer.address)
        devnet.increase_time(record.config.withdraw_delay + 1)
        transact(functions.finalizeWithdraw(record.config.as_abi()), payer.address)

        late = await server.claims().claim()
        assert [result.success for result in late] == [False]
        assert late[0].error_reason == "invalid_batch_settlement_evm_claim_simulation_failed"
        assert functions.channels(channel_id).call() == [0, 0]  # the vouchers were worth nothing on chain
