"""A lying batch-settlement server against x402pay's payer, on anvil: the payer never signs past its caps, stops
paying a liar, takes its escrow back, and its channel book matches the chain at the end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from channel_support import Channels
from eth_account.signers.local import LocalAccount
from hostile_channel_server import DELAY, PRICE, describe, hostile_server
from web3 import Web3
from web3.exceptions import ContractCustomError

import x402pay
from x402pay._channel_admin import config_of, finalize
from x402pay._channel_chain import finalize_withdraw
from x402pay.errors import OriginUntrusted, PaymentRejected, ReceiptMismatch, SpendCapExceeded
from x402pay.ledger import Ledger, Web3Chain
from x402pay.ledger._channels import ChannelRecord
from x402pay.testing import Devnet

pytestmark = pytest.mark.chain


def client_for(devnet: Devnet, payer: LocalAccount, ledger: Ledger, **policy: int) -> httpx.Client:
    spend = x402pay.SpendPolicy(max_per_request=PRICE, assets={devnet.usdc}, schemes=("batch-settlement",), **policy)
    wallet = x402pay.Wallet.from_key(bytes(payer.key))
    return httpx.Client(transport=x402pay.PaymentTransport(wallet=wallet, policy=spend, rpc_url=devnet.rpc_url,
                                                           ledger=ledger))  # fmt: skip


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger.sqlite(tmp_path / "ledger.db") as opened:
        yield opened


def on_chain(channels: Channels, record: ChannelRecord) -> list[int]:
    return list(channels.settlement.functions.channels(bytes.fromhex(record.channel_id[2:])).call())


def the_channel(ledger: Ledger) -> ChannelRecord:
    (record,) = ledger.channels.all()
    return record


def test_a_stream_whose_receipt_charges_past_the_voucher_stops_payment_and_the_escrow_comes_back(
    channels: Channels, payer: LocalAccount, ledger: Ledger
) -> None:
    devnet = channels.devnet
    with hostile_server(channels) as hostile, client_for(devnet, payer, ledger) as client:
        assert client.get(hostile.url + "/report").status_code == 200, describe(hostile)  # the deposit, honestly
        hostile.lie = "stream_overcharge"
        with client.stream("GET", hostile.url + "/report") as response:
            assert response.status_code == 200  # the headers carry no report: booked at the voucher's most
            with pytest.raises(ReceiptMismatch, match="charged 2000, above the signed maximum 1000"):
                response.read()
        with pytest.raises(OriginUntrusted):  # nothing more is signed for it
            client.get(hostile.url + "/report")
        record = the_channel(ledger)
        assert (record.signed_max, record.charged) == (2 * PRICE, 2 * PRICE)  # the voucher it holds, as spent
        assert (record.state, record.deposited) == ("withdrawing", 10 * PRICE)
        assert on_chain(channels, record) == [10 * PRICE, 0]  # nothing claimed yet: it can all come back


@pytest.mark.parametrize(
    ("lie", "caught"),
    [
        ("overcharge", "charged 2000, above this request's maximum 1000"),
        ("cumulative", "cumulative charge of 2500, not 1000 \\+ 1000"),
        ("balance", "balance of 10001, not 10000"),
    ],
)
def test_a_lie_in_the_report_stops_payment_and_the_escrow_comes_back_before_a_late_claim(
    channels: Channels, payer: LocalAccount, ledger: Ledger, lie: str, caught: str
) -> None:
    devnet = channels.devnet
    payer_before = channels.balance_of(payer.address)
    with hostile_server(channels) as hostile, client_for(devnet, payer, ledger) as client:
        assert client.get(hostile.url + "/report").status_code == 200, describe(hostile)  # the deposit, honestly
        hostile.lie = lie
        with pytest.raises(ReceiptMismatch, match=caught):
            client.get(hostile.url + "/report")
        with pytest.raises(OriginUntrusted):  # nothing more is signed for it
            client.get(hostile.url + "/report")
        record = the_channel(ledger)
        assert record.signed_max == 2 * PRICE  # never more than charged + the request's maximum
        assert record.charged == 2 * PRICE  # the liar holds a voucher for 2000: booked as spent
        assert (record.state, record.deposited) == ("withdrawing", 10 * PRICE)
        assert hostile.voucher is not None
        assert hostile.voucher.max_claimable_amount == 2 * PRICE
        devnet.increase_time(DELAY + 1)
        _, record = finalize(ledger.channels, devnet.web3(), x402pay.Wallet.from_key(bytes(payer.key)),
                             record.channel_id)  # fmt: skip
        assert channels.balance_of(payer.address) == payer_before  # all the escrow came back: nothing was claimed
        with pytest.raises(ContractCustomError) as late:
            hostile.claim()
        assert str(late.value.data).startswith(Web3.keccak(text="ClaimExceedsBalance()")[:4].to_0x_hex())
        assert on_chain(channels, record) == [0, 0]
        assert (record.state, record.chain_balance, record.chain_claimed, record.escrow) == ("closed", 0, 0, 0)


def test_a_claim_inside_the_delay_is_what_the_payer_loses_and_the_book_says_so(
    channels: Channels, payer: LocalAccount, ledger: Ledger
) -> None:
    devnet = channels.devnet
    payer_before = channels.balance_of(payer.address)
    with hostile_server(channels) as hostile, client_for(devnet, payer, ledger) as client:
        assert client.get(hostile.url + "/report").status_code == 200
        hostile.lie = "overcharge"
        with pytest.raises(ReceiptMismatch):
            client.get(hostile.url + "/report")
        hostile.claim()  # it claims its whole voucher before the withdrawal finalizes
        devnet.increase_time(DELAY + 1)
        _, record = finalize(ledger.channels, devnet.web3(), x402pay.Wallet.from_key(bytes(payer.key)),
                             record_id := the_channel(ledger).channel_id)  # fmt: skip
        assert record.channel_id == record_id
        assert channels.balance_of(payer.address) == payer_before - 2 * PRICE
        assert on_chain(channels, record) == [2 * PRICE, 2 * PRICE]
        assert (record.charged, record.chain_claimed, record.withdrawn) == (2 * PRICE, 2 * PRICE, 8 * PRICE)
    assert [entry.held for entry in ledger.entries()] == [2 * PRICE]  # the budgets hold what the liar took


def test_a_withdrawal_finalized_before_the_book_was_written_is_booked_by_the_next_finalize(
    channels: Channels, payer: LocalAccount, ledger: Ledger
) -> None:
    devnet = channels.devnet
    wallet = x402pay.Wallet.from_key(bytes(payer.key))
    with hostile_server(channels) as hostile, client_for(devnet, payer, ledger) as client:
        assert client.get(hostile.url + "/report").status_code == 200
        hostile.lie = "overcharge"
        with pytest.raises(ReceiptMismatch):
            client.get(hostile.url + "/report")  # the payer starts withdrawing its unclaimed escrow
    record = the_channel(ledger)
    devnet.increase_time(DELAY + 1)
    finalize_withdraw(devnet.web3(), wallet, config_of(record))  # mined; the process dies before its book is written
    _, record = finalize(ledger.channels, devnet.web3(), wallet, record.channel_id)
    assert on_chain(channels, record) == [0, 0]  # nothing was claimed: the whole deposit came back
    assert (record.state, record.withdrawn, record.escrow) == ("closed", 10 * PRICE, 0)
    assert [entry.held for entry in ledger.entries()] == [0]  # what came back is held no more


def test_a_deposit_hint_far_above_the_cap_deposits_the_cap(
    channels: Channels, payer: LocalAccount, ledger: Ledger
) -> None:
    devnet = channels.devnet
    capped = client_for(devnet, payer, ledger, max_deposit=3 * PRICE)
    with hostile_server(channels, min_deposit=10**15) as hostile, capped as client:
        for _ in range(4):
            assert client.get(hostile.url + "/report").status_code == 200
        record = the_channel(ledger)
        assert on_chain(channels, record) == [6 * PRICE, 0]  # two deposits of the cap, not 10**15
        assert (record.deposited, record.charged, record.signed_max) == (6 * PRICE, 4 * PRICE, 4 * PRICE)


def test_a_cap_below_the_price_refuses_before_anything_is_signed(
    channels: Channels, payer: LocalAccount, ledger: Ledger
) -> None:
    devnet = channels.devnet
    with hostile_server(channels) as hostile, client_for(devnet, payer, ledger, max_deposit=PRICE // 2) as client:
        with pytest.raises(SpendCapExceeded, match="max_deposit 500"):
            client.get(hostile.url + "/report")
        assert hostile.voucher is None  # nothing signed reached it
        assert ledger.entries() == []  # the deposit's reservation was never made


def test_a_forged_corrective_402_is_not_believed_and_no_higher_ceiling_is_signed(
    channels: Channels, payer: LocalAccount, ledger: Ledger
) -> None:
    devnet = channels.devnet
    with hostile_server(channels) as hostile, client_for(devnet, payer, ledger) as client:
        assert client.get(hostile.url + "/report").status_code == 200
        hostile.lie = "forged"
        with pytest.raises(PaymentRejected, match="could not prove"):
            client.get(hostile.url + "/report")
        record = the_channel(ledger)
        assert hostile.voucher is not None
        assert hostile.voucher.max_claimable_amount == 2 * PRICE  # the retry signed the same ceiling, not 10 000
        assert (record.charged, record.signed_max) == (PRICE, 2 * PRICE)
        assert on_chain(channels, record) == [10 * PRICE, 0]


def test_a_corrective_402_proven_by_the_voucher_just_sent_is_not_believed_and_no_higher_ceiling_is_signed(
    channels: Channels, payer: LocalAccount, ledger: Ledger
) -> None:
    devnet = channels.devnet
    with hostile_server(channels) as hostile, client_for(devnet, payer, ledger) as client:
        assert client.get(hostile.url + "/report").status_code == 200
        hostile.lie = "replay"  # "you already owe this request's whole ceiling": our signature, but not a proof
        with pytest.raises(PaymentRejected, match="could not prove"):
            client.get(hostile.url + "/report")
        record = the_channel(ledger)
        assert hostile.voucher is not None
        assert hostile.voucher.max_claimable_amount == 2 * PRICE  # not 3 000: one request, one request's maximum
        assert (record.charged, record.signed_max) == (PRICE, 2 * PRICE)


def test_the_deposit_is_a_payment_in_the_ledger_held_as_escrow(
    channels: Channels, payer: LocalAccount, ledger: Ledger
) -> None:
    devnet = channels.devnet
    with hostile_server(channels) as hostile, client_for(devnet, payer, ledger) as client:
        for _ in range(3):
            assert client.get(hostile.url + "/report").status_code == 200
    (entry,) = ledger.entries()
    assert (entry.scheme, entry.amount, entry.held, entry.state.value) == ("batch-settlement", 10 * PRICE,
                                                                          10 * PRICE, "settled")  # fmt: skip
    assert entry.pay_to == devnet.batch_settlement


def test_a_deposit_reported_but_never_made_is_caught_on_chain_and_stays_held_until_reconciled(
    channels: Channels, payer: LocalAccount, ledger: Ledger
) -> None:
    devnet = channels.devnet
    with hostile_server(channels, lie="no_deposit") as hostile, client_for(devnet, payer, ledger) as client:
        with pytest.raises(ReceiptMismatch, match="the deposit is not on chain"):
            client.get(hostile.url + "/report")
        with pytest.raises(OriginUntrusted):
            client.get(hostile.url + "/report")
    record = the_channel(ledger)
    assert (record.deposited, record.chain_balance, record.signed_max) == (0, 0, PRICE)
    assert on_chain(channels, record) == [0, 0]
    (deposit,) = ledger.entries()
    assert (deposit.state.value, deposit.held) == ("unknown", 10 * PRICE)  # may still land until it expires
    devnet.increase_time(3_600)  # past the authorization's lifetime: reconcile sees its nonce unused
    report = ledger.reconcile(Web3Chain(devnet.web3()))
    assert [entry.id for entry in report.released] == [deposit.id]
    assert ledger.entries()[0].held == 0
