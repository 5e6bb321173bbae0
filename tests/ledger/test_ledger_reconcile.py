"""reconcile() against a real chain: lost responses, expired authorizations, a process killed mid-payment."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import pytest
from chain_support import AMOUNT, LIFETIME, chain_clock, pay_until_killed, requirement, reserve_and_sign, submit
from eth_account.signers.local import LocalAccount
from ledger_support import Backend
from web3 import Web3
from web3.exceptions import ContractCustomError, ContractLogicError

from x402pay._protocol.abi import TRANSFER_TOPIC
from x402pay.errors import OriginUntrusted
from x402pay.ledger import DEFAULT_MARGIN, Budget, Entry, EntryState, Ledger, ReconcileReport, Transfer, Web3Chain
from x402pay.ledger._chain import Resolution, judge_entry
from x402pay.testing import Devnet

METHODS = ["eip3009", "permit2"]


def payee_balance(devnet: Devnet) -> int:
    token = devnet.contract("TestUSDC", devnet.usdc)
    return int(token.functions.balanceOf(devnet.payee.address).call())


def open_ledger(backend: Backend, devnet: Devnet, budgets: tuple[Budget, ...] = ()) -> Ledger:
    return backend.ledger(budgets, clock=chain_clock(devnet.web3()))


@pytest.mark.chain
@pytest.mark.parametrize("method", METHODS)
def test_a_lost_response_then_a_retry_pays_once_and_reconcile_settles_it(
    backend: Backend, x402pay_chain: Devnet, x402pay_payer: LocalAccount, method: str
) -> None:
    web3, devnet = x402pay_chain.web3(), x402pay_chain
    req = requirement(devnet.usdc, devnet.chain_id, devnet.payee.address, method)
    with open_ledger(backend, devnet, (Budget(devnet.usdc, AMOUNT),)) as ledger:
        entry = reserve_and_sign(ledger, "request-1", x402pay_payer, req, devnet.chain_time())
        tx_hash = submit(web3, devnet.facilitator, devnet.usdc, dict(entry.payment or {}))
        ledger.mark_unknown(entry.id, "connection dropped after the server settled")
        retry = ledger.reserve("request-1", origin="https://paid.example", asset=req.asset, network=req.network,
                               amount=req.amount, pay_to=req.pay_to)  # fmt: skip
        assert (retry.id, retry.payment) == (entry.id, entry.payment)
        with pytest.raises((ContractLogicError, ContractCustomError)):
            submit(web3, devnet.facilitator, devnet.usdc, dict(retry.payment or {}))
        report = ledger.reconcile(Web3Chain(web3))
        [settled] = report.settled
        assert (settled.id, settled.state, settled.settled_amount, settled.tx_hash) == (
            entry.id, EntryState.SETTLED, AMOUNT, tx_hash,
        )  # fmt: skip
        assert payee_balance(devnet) == AMOUNT
        assert ledger.remaining(devnet.usdc, network=req.network, origin="https://paid.example") == 0


@pytest.mark.chain
@pytest.mark.parametrize("method", METHODS)
def test_an_unused_authorization_is_released_only_once_expired(
    backend: Backend, x402pay_chain: Devnet, x402pay_payer: LocalAccount, method: str
) -> None:
    devnet = x402pay_chain
    req = requirement(devnet.usdc, devnet.chain_id, devnet.payee.address, method)
    with open_ledger(backend, devnet) as ledger:
        entry = reserve_and_sign(ledger, "request-1", x402pay_payer, req, devnet.chain_time())
        early = ledger.reconcile(Web3Chain(devnet.web3()))
        assert [(item.id, why) for item, why in early.unresolved] == [(entry.id, f"unused, but valid until "
                                                                                  f"{entry.valid_before}")]  # fmt: skip
        devnet.increase_time(LIFETIME + DEFAULT_MARGIN + 1)
        [released] = ledger.reconcile(Web3Chain(devnet.web3())).released
        assert (released.id, released.state, released.held) == (entry.id, EntryState.RELEASED, 0)
        assert "nonce unused" in str(released.detail)


@pytest.mark.chain
async def test_async_reconcile_settles_a_lost_response(
    backend: Backend, x402pay_chain: Devnet, x402pay_payer: LocalAccount
) -> None:
    devnet = x402pay_chain
    req = requirement(devnet.usdc, devnet.chain_id, devnet.payee.address, "eip3009")
    with open_ledger(backend, devnet) as ledger:
        entry = reserve_and_sign(ledger, "request-1", x402pay_payer, req, devnet.chain_time())
    tx_hash = submit(devnet.web3(), devnet.facilitator, devnet.usdc, dict(entry.payment or {}))
    async with await backend.aledger(clock=chain_clock(devnet.web3())) as aledger:
        report = await aledger.reconcile(Web3Chain(devnet.web3()))
    assert [(item.id, item.tx_hash) for item in report.settled] == [(entry.id, tx_hash)]


@pytest.mark.chain
def test_a_process_killed_mid_payment_is_fully_accounted_by_reconcile(
    backend: Backend, x402pay_chain: Devnet, x402pay_payer: LocalAccount
) -> None:
    devnet, web3 = x402pay_chain, x402pay_chain.web3()
    budgets = (Budget(devnet.usdc, AMOUNT * 1_000),)
    start_block = web3.eth.block_number
    open_ledger(backend, devnet, budgets).close()
    context = multiprocessing.get_context("spawn")
    child = context.Process(target=pay_until_killed, args=(backend, budgets, devnet.rpc_url, devnet.usdc,
        devnet.payee.address, x402pay_payer.key.hex(), devnet.facilitator.key.hex()))  # fmt: skip
    child.start()
    _wait_for_entries(backend, devnet, 14)
    os.kill(child.pid or 0, signal.SIGKILL)
    child.join(10)
    assert child.exitcode == -signal.SIGKILL
    devnet.increase_time(LIFETIME + DEFAULT_MARGIN + 1)
    with open_ledger(backend, devnet, budgets) as ledger:
        report = ledger.reconcile(Web3Chain(web3), stale_after=0)
        assert report.unresolved == ()
        assert report.mismatched == ()
        entries = ledger.entries(limit=10_000)
        assert {entry.state for entry in entries} <= {EntryState.SETTLED, EntryState.RELEASED}
        on_chain = _transfer_txs(web3, devnet, x402pay_payer.address, start_block)
        assert {entry.tx_hash for entry in entries if entry.state is EntryState.SETTLED} == on_chain
        spent = sum(entry.held for entry in entries)
        assert spent == payee_balance(devnet) == AMOUNT * len(on_chain)
        [status] = ledger.budget_status()
        assert status.held == spent


def _wait_for_entries(backend: Backend, devnet: Devnet, count: int) -> None:
    deadline = time.monotonic() + 60
    with open_ledger(backend, devnet) as ledger:
        while len(ledger.entries(limit=count)) < count:
            assert time.monotonic() < deadline, "the paying child made no progress"
            time.sleep(0.05)


def _transfer_txs(web3: Web3, devnet: Devnet, payer: str, start_block: int) -> set[str]:
    topics = [TRANSFER_TOPIC, "0x" + "00" * 12 + payer[2:].lower(), "0x" + "00" * 12 + devnet.payee.address[2:].lower()]
    logs = web3.eth.get_logs({"address": devnet.usdc, "topics": topics, "fromBlock": start_block})  # type: ignore[typeddict-item]
    return {Web3.to_hex(log["transactionHash"]) for log in logs}


# -- judge_entry, with a chain that answers what the test says ---------------------------------------------------


class FakeChain:
    def __init__(self, now: int, used: bool, transfer: Transfer | None) -> None:
        self.now, self.used, self.transfer = now, used, transfer
        self.calls: list[str] = []

    def serves(self, network: str) -> bool:
        return network == "eip155:31337"

    def time(self) -> int:
        self.calls.append("time")
        return self.now

    def nonce_used(self, entry: Entry) -> bool:
        self.calls.append("nonce")
        return self.used

    def find_transfer(self, entry: Entry) -> Transfer | None:
        return self.transfer


def signed_entry(network: str = "eip155:31337") -> Entry:
    return Entry(id="e", key="k", origin="o", asset="0xa", network=network, scheme="exact", pay_to="0xb", amount=10,
                 held=10, state=EntryState.AUTHORIZED, created_at=0, updated_at=0, payer="0xc", method="eip3009",
                 nonce="0x01", valid_before=100)  # fmt: skip


def test_judge_reads_the_clock_before_the_nonce() -> None:
    chain = FakeChain(now=200, used=False, transfer=None)
    assert judge_entry(chain, signed_entry(), margin=30).action == "release"
    assert chain.calls == ["time", "nonce"]


@pytest.mark.parametrize(
    ("chain", "entry", "expected"),
    [
        (FakeChain(130, False, None), signed_entry(),
         Resolution(signed_entry(), "open", "unused, but valid until 100")),
        (FakeChain(0, True, None), signed_entry(), Resolution(signed_entry(), "open",
         "nonce used on chain but no matching Transfer found (canceled?)")),
        (FakeChain(0, False, None), signed_entry("eip155:1"), Resolution(signed_entry("eip155:1"), "open",
         "on eip155:1, not this chain")),
        (FakeChain(0, True, Transfer(7, "0xt")), signed_entry(), Resolution(signed_entry(), "settle",
         "settled on chain in 0xt", Transfer(7, "0xt"))),
    ],
    ids=["not yet expired", "used without a transfer", "another chain", "settled"],
)  # fmt: skip
def test_judge_verdicts(chain: FakeChain, entry: Entry, expected: Resolution) -> None:
    assert judge_entry(chain, entry, margin=30) == expected


def test_a_chain_transfer_above_the_signed_maximum_is_recorded_as_a_mismatch(backend: Backend) -> None:
    with backend.ledger() as ledger:
        entry = ledger.reserve("k", origin="o", asset="0xa", network="eip155:31337", amount=10, pay_to="0xb")
        ledger.authorize(entry.id, payment={}, payer="0xc", nonce="0x01", valid_before=100, method="eip3009")
        report = ledger.reconcile(FakeChain(0, True, Transfer(11, "0xt")))
        [mismatch] = report.mismatched
        assert (mismatch.state, mismatch.held) == (EntryState.MISMATCH, 11)  # at least what the chain moved
        assert "chain moved 11 in 0xt" in str(mismatch.detail)


# -- claims: the server's word beside the hold, decided by the chain ----------------------------------------------


def claimed_entry(ledger: Ledger, claimed: int, tx: str | None = "0xt", key: str = "k") -> Entry:
    entry = ledger.reserve(key, origin="https://liar.example", asset="0xa", network="eip155:31337", amount=10,
                           pay_to="0xb", scheme="upto")  # fmt: skip
    ledger.authorize(entry.id, payment={}, payer="0xc", nonce="0x01", valid_before=100, method="eip3009")
    return ledger.claim(entry.id, amount=claimed, tx_hash=tx)


def test_a_claim_the_chain_shows_is_settled_at_what_moved(backend: Backend) -> None:
    with backend.ledger() as ledger:
        entry = claimed_entry(ledger, 7)
        assert entry.held == 10
        [settled] = ledger.reconcile(FakeChain(0, True, Transfer(7, "0xt"))).settled
        assert (settled.state, settled.held, settled.settled_amount) == (EntryState.SETTLED, 7, 7)
        assert ledger.untrusted() == {}


def test_an_under_claim_then_a_full_settlement_is_a_mismatch_holding_what_moved(backend: Backend) -> None:
    with backend.ledger() as ledger:
        entry = claimed_entry(ledger, 1)
        assert ledger.reconcile(FakeChain(0, False, None)).unresolved  # unused and valid: the maximum stays held
        [mismatch] = ledger.reconcile(FakeChain(0, True, Transfer(10, "0xlate"))).mismatched
        assert (mismatch.state, mismatch.held, mismatch.settled_amount) == (EntryState.MISMATCH, 10, 10)
        assert "claimed 1, but the chain moved 10 in 0xlate" in str(mismatch.detail)
        assert "claimed 1" in ledger.untrusted()["https://liar.example"]
        with pytest.raises(OriginUntrusted, match=r"https://LIAR\.example is untrusted \(claimed 1"):
            ledger.reserve("next", origin="https://LIAR.example", asset="0xa", network="eip155:31337", amount=1,
                           pay_to="0xb")  # fmt: skip
        again = ledger.reconcile(FakeChain(0, True, Transfer(10, "0xlate")))  # proven: nothing left to visit
        assert again == ReconcileReport()
        assert ledger.get(entry.id) == mismatch


def test_a_claimed_settlement_that_never_happened_holds_nothing_once_expired_and_marks_the_origin(
    backend: Backend,
) -> None:
    with backend.ledger() as ledger:
        claimed_entry(ledger, 10, tx="0x" + "99" * 32)
        [lie] = ledger.reconcile(FakeChain(1_000, False, None)).mismatched
        assert (lie.state, lie.held) == (EntryState.MISMATCH, 0)
        assert "expired at 100 with its nonce unused" in str(lie.detail)
        assert "https://liar.example" in ledger.untrusted()
        assert ledger.clear_untrusted("https://liar.example")
        assert ledger.untrusted() == {}


def test_a_mismatch_is_visited_until_the_chain_shows_what_it_moved(backend: Backend) -> None:
    with backend.ledger() as ledger:
        entry = claimed_entry(ledger, 10)
        ledger.mark_mismatch(entry.id, "transaction: no such transaction")
        assert ledger.reconcile(FakeChain(0, False, None)).unresolved  # still valid: it may yet be used
        [proven] = ledger.reconcile(FakeChain(0, True, Transfer(6, "0xreal"))).mismatched
        assert (proven.state, proven.held, proven.tx_hash) == (EntryState.MISMATCH, 6, "0xreal")


def test_a_watching_ledger_settles_claims_as_the_chain_shows_them(backend: Backend) -> None:
    reports: list[ReconcileReport] = []
    chain = FakeChain(0, False, None)
    with backend.ledger() as ledger:
        entry = claimed_entry(ledger, 7)
        with ledger.watch(lambda: chain, every=0.02, on_report=reports.append):
            chain.used, chain.transfer = True, Transfer(7, "0xt")  # the settlement lands while the bot runs
            deadline = time.monotonic() + 10
            while ledger.get(entry.id).state is not EntryState.SETTLED and time.monotonic() < deadline:
                time.sleep(0.02)
        assert ledger.get(entry.id).state is EntryState.SETTLED
        assert reports
        assert any(report.settled for report in reports)


def test_a_watcher_outlives_a_failed_round() -> None:
    asked: list[str] = []

    class Down(FakeChain):
        def time(self) -> int:
            asked.append("time")
            raise ConnectionError("rpc down")

    built: list[Down] = []
    with Ledger.sqlite(":memory:") as ledger:
        claimed_entry(ledger, 7)
        with ledger.watch(lambda: built.append(Down(0, False, None)) or built[-1], every=0.01):
            deadline = time.monotonic() + 10
            while len(asked) < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
    assert len(asked) >= 3  # round after failed round
    assert len(built) == 1  # the chain is built once, on the watcher's thread
