"""The paid side of payment channels: the official SDK's batch-settlement client pays x402pay's PaymentMiddleware and
LocalFacilitator on anvil (real uvicorn on loopback), and ChannelClaims claims, sweeps and refunds."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest
from channel_support import sign, transact
from eth_account.signers.local import LocalAccount
from paid_channel_support import (
    CAP,
    PRICE,
    ChannelServer,
    channel_server,
    counted_correctives,
    official_http,
    official_scheme,
)
from x402.http.utils import decode_payment_response_header
from x402.mechanisms.evm.batch_settlement.client import RefundOptions, create_batch_settlement_eip3009_deposit_payload
from x402.mechanisms.evm.signers import EthAccountSigner
from x402.schemas import PaymentRequirements as PaymentRequirementsSdk

from x402pay._protocol.channel_wire import Voucher, VoucherPayload
from x402pay._protocol.codec import encode_header
from x402pay._protocol.models import PaymentPayload
from x402pay._schemes import channel
from x402pay._schemes.channel import ChannelConfig
from x402pay.server import _channel_rules as rules
from x402pay.server._channel_rules import CHANNEL_BUSY
from x402pay.server._demo import running_demo
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


def decoded(response: Any) -> dict[str, object]:
    return decode_payment_response_header(response.headers["payment-response"]).model_dump()


def channel_of(answers: list[dict[str, object]]) -> bytes:
    extra = answers[0]["extra"]
    assert isinstance(extra, dict)
    return bytes.fromhex(extra["channelState"]["channelId"][2:])


@pytest.mark.parametrize(
    ("path", "remote", "server_signs"),
    [("/quote", False, False), ("/quote-permit2", False, False), ("/quote", True, True)],
    ids=["eip3009", "permit2", "eip3009-over-http-server-signs"],
)
async def test_one_deposit_many_vouchers_then_claim_and_sweep(
    x402pay_chain: Devnet, tmp_path: Path, path: str, remote: bool, server_signs: bool
) -> None:
    devnet = x402pay_chain
    with channel_server(devnet, remote=remote, server_signs=server_signs) as server:
        payee_before = server.balance(devnet.payee.address)
        answers = await pay_requests(server, tmp_path, path, USES)
        deposit = 10 * PRICE  # the SDK deposits the price's minDeposit hint

        assert answers[0]["transaction"]
        assert answers[0]["amount"] == str(deposit)
        assert all(answer["transaction"] == answer["amount"] == "" for answer in answers[1:])  # vouchers: no tx
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
        # The deposit the facilitator settled for the payer is escrow, not a charge: its store's total leaves it out.
        assert server.facilitator.settlements.settled_total(devnet.payers[0].address) == 0


@pytest.mark.parametrize("server_signs", [False, True], ids=["facilitator-signs", "server-signs"])
async def test_partial_then_full_refund(x402pay_chain: Devnet, tmp_path: Path, server_signs: bool) -> None:
    devnet, payer = x402pay_chain, x402pay_chain.payers[0]
    with channel_server(devnet, server_signs=server_signs) as server:
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


def forged(server: ChannelServer, accepted: dict[str, object], voucher: Voucher, config: ChannelConfig) -> str:
    payload = VoucherPayload(config, voucher).as_wire()
    return encode_header(PaymentPayload(x402_version=2, payload=payload, accepted=accepted))


async def test_forged_and_malformed_vouchers_are_refused_before_the_app(x402pay_chain: Devnet, tmp_path: Path) -> None:
    devnet, payer = x402pay_chain, x402pay_chain.payers[0]
    with channel_server(devnet) as server:
        answers = await pay_requests(server, tmp_path, "/quote", [PRICE])
        record = server.middleware.channels.store.get(channel_of(answers))
        assert record is not None
        config, chain_id, ceiling = record.config, devnet.chain_id, record.charged + PRICE
        accepted = server.middleware_client().get("/quote").json()["accepts"][0]

        def voucher(signer: LocalAccount, amount: int, channel_id: bytes = record.channel_id) -> Voucher:
            return Voucher(channel_id, amount, sign(signer, channel.voucher_digest(channel_id, amount, chain_id)))

        other_id = channel.channel_id(replace(config, salt=b"\x01" * 32), chain_id)
        cases = {
            rules.VOUCHER_SIGNATURE: forged(server, accepted, voucher(devnet.payers[1], ceiling), config),
            rules.CUMULATIVE_MISMATCH: forged(server, accepted, voucher(payer, ceiling + PRICE), config),
            rules.CHANNEL_ID_MISMATCH: forged(server, accepted, voucher(payer, ceiling, other_id), config),
        }
        for reason, header in cases.items():
            response = server.middleware_client().get("/quote", headers={"PAYMENT-SIGNATURE": header})
            assert response.status_code == 402, reason
            assert response.json()["error"] == reason
        mismatch = server.middleware_client().get(
            "/quote", headers={"PAYMENT-SIGNATURE": cases[rules.CUMULATIVE_MISMATCH]}
        )
        extra = mismatch.json()["accepts"][0]["extra"]  # the corrective 402 says what the server holds
        assert extra["channelState"]["chargedCumulativeAmount"] == str(record.charged)
        assert extra["voucherState"] == {"signedMaxClaimable": str(PRICE), "signature": "0x" + record.signature.hex()}

        broken = encode_header(
            PaymentPayload(x402_version=2, payload={"type": "voucher", "channelConfig": {}}, accepted=accepted)
        )
        response = server.middleware_client().get("/quote", headers={"PAYMENT-SIGNATURE": broken})
        assert (response.status_code, response.json()["error"]) == (402, "invalid_payload")
        assert "channelConfig" in response.json()["errorMessage"]

        assert len(server.probe.calls) == 1  # only the first, paid request reached the app
        assert server.middleware.channels.store.get(record.channel_id) == record  # nothing charged or stored


async def test_the_demo_api_offers_a_channel_route(x402pay_chain: Devnet, tmp_path: Path) -> None:
    devnet = x402pay_chain
    with running_demo(devnet) as url:
        scheme = official_scheme(devnet, devnet.payers[0], tmp_path)
        async with official_http(devnet, scheme, url) as http:
            responses = [await http.get("/v1/fortune/channel") for _ in range(3)]
    assert [response.status_code for response in responses] == [200, 200, 200]
    answers = [decode_payment_response_header(r.headers["payment-response"]) for r in responses]
    assert [bool(answer.transaction) for answer in answers] == [True, False, False]  # one deposit, then vouchers
    assert [answer.extra["chargedAmount"] for answer in answers] == ["1000"] * 3  # type: ignore[index]


async def test_the_claims_timer_claims_without_being_asked(x402pay_chain: Devnet, tmp_path: Path) -> None:
    devnet = x402pay_chain
    with channel_server(devnet) as server:
        answers = await pay_requests(server, tmp_path, "/quote", [PRICE, 300])
        channel_id = channel_of(answers)
        claims = server.claims()
        store = server.middleware.channels.store
        await claims.start(claim_every=0.2)
        try:
            with anyio.fail_after(20):
                # The claim is on chain a moment before the timer's task marks it in the store: wait for both.
                while server.settlement().functions.channels(channel_id).call()[1] != PRICE + 300 or (
                    getattr(store.get(channel_id), "unclaimed", None) != 0
                ):
                    await anyio.sleep(0.1)
        finally:
            await claims.stop()


async def test_a_deposit_below_an_enforced_minimum_is_refused(x402pay_chain: Devnet, tmp_path: Path) -> None:
    devnet = x402pay_chain
    with channel_server(devnet, min_deposit=CAP * 10, enforce_min_deposit=True) as server:
        scheme = official_scheme(devnet, devnet.payers[0], tmp_path)
        async with official_http(devnet, scheme, server.url) as http:
            response = await http.get("/quote")  # the SDK caps its deposit at 5x its per-payment cap: too little
        assert response.status_code == 402
        assert response.json()["error"] == rules.DEPOSIT_BELOW_MIN
        assert server.probe.calls == []


async def test_vouchers_are_checked_locally_while_the_mirror_is_fresh(
    x402pay_chain: Devnet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    devnet = x402pay_chain
    with channel_server(devnet) as server:
        asked: list[str] = []
        verify = server.facilitator.verify

        async def counted(payload: PaymentPayload, requirement: Any) -> Any:
            asked.append(payload.payload["type"])
            return await verify(payload, requirement)

        monkeypatch.setattr(server.facilitator, "verify", counted)
        answers = await pay_requests(server, tmp_path, "/quote", [PRICE] * 6)
        assert asked == ["deposit"]  # five vouchers, no facilitator call

        store = server.middleware.channels.store
        record = store.get(channel_of(answers))
        assert record is not None
        store.save(replace(record, synced_at=time.time() - 301))  # older than the TTL (5 min at delay 900)
        await pay_requests(server, tmp_path, "/quote", [PRICE, PRICE])
        assert asked == ["deposit", "voucher"]  # asked once, and the mirror is fresh again


@pytest.mark.parametrize("server_signs", [False, True], ids=["facilitator-signs", "server-signs"])
async def test_idle_channels_are_refunded_with_their_claim(
    x402pay_chain: Devnet, tmp_path: Path, server_signs: bool
) -> None:
    devnet, payer = x402pay_chain, x402pay_chain.payers[0]
    with channel_server(devnet, server_signs=server_signs) as server:
        answers = await pay_requests(server, tmp_path, "/quote", [PRICE, 600])
        channel_id, charged, deposit = channel_of(answers), PRICE + 600, 10 * PRICE
        before = server.balance(payer.address)
        claims = server.claims()
        assert await claims.refund_idle(3600) == []  # used just now: not idle
        refunded = await claims.refund_idle(0)
        assert [(result.success, result.amount) for result in refunded] == [(True, deposit - charged)]
        assert server.balance(payer.address) == before + deposit - charged
        assert server.settlement().functions.channels(channel_id).call() == [charged, charged]
        assert server.middleware.channels.store.get(channel_id) is None
        assert [(result.success, result.amount) for result in await claims.sweep()] == [(True, charged)]


async def test_an_idle_refund_leaves_a_channel_a_request_is_using_and_its_voucher_stays_claimable(
    x402pay_chain: Devnet, tmp_path: Path
) -> None:
    devnet = x402pay_chain
    with channel_server(devnet) as server:
        channel_id = channel_of(await pay_requests(server, tmp_path, "/quote", [PRICE]))  # deposits 10 prices
        claims = server.claims()
        scheme = official_scheme(devnet, devnet.payers[0], tmp_path)
        async with official_http(devnet, scheme, server.url) as http:
            held = asyncio.create_task(http.get("/quote", params={"hold": 1, "use": PRICE}))
            await anyio.to_thread.run_sync(server.probe.entered.wait, 20)
            refunded = await claims.refund_idle(0)  # the channel is in use: refunding it now strands this charge
            server.probe.gate.set()
            assert (await held).status_code == 200
        assert refunded == []
        assert [result.success for result in await claims.claim()] == [True]  # the request's voucher is money
        assert server.settlement().functions.channels(channel_id).call() == [10 * PRICE, 2 * PRICE]


async def test_a_deposit_whose_authorization_was_altered_is_refused(x402pay_chain: Devnet, tmp_path: Path) -> None:
    devnet, payer = x402pay_chain, x402pay_chain.payers[0]
    with channel_server(devnet) as server:
        accepted = server.middleware_client().get("/quote").json()["accepts"][0]
        requirement = PaymentRequirementsSdk.model_validate(accepted)
        config = official_scheme(devnet, payer, tmp_path).build_channel_config(requirement)
        deposit = create_batch_settlement_eip3009_deposit_payload(
            EthAccountSigner(payer), requirement, config, 10 * PRICE, PRICE
        ).to_dict()
        authorization = deposit["deposit"]["authorization"]["erc3009Authorization"]
        authorization["validBefore"] = str(int(authorization["validBefore"]) + 1)  # the signature no longer covers it
        header = encode_header(PaymentPayload(x402_version=2, payload=deposit, accepted=accepted))
        before = server.balance(payer.address)

        response = server.middleware_client().get("/quote", headers={"PAYMENT-SIGNATURE": header})
        assert response.status_code == 402
        assert response.json()["error"] == rules.DEPOSIT_SIMULATION
        assert server.probe.calls == []
        assert server.balance(payer.address) == before
        assert server.middleware.channels.store.all() == []


async def test_a_streamed_answer_carries_its_receipt_in_band(
    x402pay_chain: Devnet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    devnet = x402pay_chain
    with channel_server(devnet) as server:
        corrected = counted_correctives(server, monkeypatch)
        scheme = official_scheme(devnet, devnet.payers[0], tmp_path)
        async with official_http(devnet, scheme, server.url) as http:
            streamed = [await http.get("/stream", params={"use": use}) for use in (400, 300)]
            after = await http.get("/quote", params={"use": 100})
        assert [response.status_code for response in (*streamed, after)] == [200, 200, 200]
        receipts = [json.loads(r.text.split("event: compose.receipt\ndata: ")[1].split("\n")[0]) for r in streamed]
        assert [receipt["finalAmountWei"] for receipt in receipts] == ["400", "300"]  # the charge, not the deposit
        assert "txHash" in receipts[0]  # the deposit's
        assert "txHash" not in receipts[1]
        # A stream's headers leave before its charge is known, so the SDK client learns it from one corrective 402.
        assert corrected == [rules.CUMULATIVE_MISMATCH, rules.CUMULATIVE_MISMATCH]
        assert server.probe.calls == ["/stream", "/stream", "/quote"]
        record = server.middleware.channels.store.get(channel_of([decoded(after)]))
        assert record is not None
        assert record.charged == 800
