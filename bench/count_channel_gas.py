"""Count what N paid calls cost on chain: `exact` (one EIP-3009 transfer per call) against payment channels.

A fresh anvil (automine) gets the devnet; every transaction below really runs there, sent by the facilitator, who
pays all the gas (the payer pays none in either scheme). Channel runs: each call is a voucher (off chain, no gas);
the payer deposits (EIP-3009, through the deposit collector) whenever the next voucher would pass its escrow; the
receiver side claims the latest voucher every `claim_every` calls with one signed ClaimBatch, sweeps once at the end,
and refunds what is left. Gas is exact, not timed, so the figures hold on any machine; the ratio is against `exact`
in the same run. Writes the "channel-gas" section of BENCHMARKS.md.

Run from the repository root: ``.venv/bin/python -m bench.count_channel_gas`` (``--help``).
"""

from __future__ import annotations

import argparse
import secrets
from dataclasses import dataclass, field
from typing import Any

from coincurve import PrivateKey
from eth_account import Account
from eth_account.signers.local import LocalAccount

from bench.harness import machine, today, versions, write_section
from x402pay._schemes import channel, channel_deposit, eip712
from x402pay._schemes.fast712 import sign_digest, typed_data_digest
from x402pay.testing import Anvil, Devnet, deploy_devnet

#: The devnet token's EIP-712 domain (TestUSDC, like USDC).
TOKEN_NAME, TOKEN_VERSION = "USD Coin", "2"


@dataclass
class Tally:
    """Gas and transactions by kind, and signatures by signer, for one contender."""

    gas: dict[str, int] = field(default_factory=dict)
    transactions: dict[str, int] = field(default_factory=dict)
    payer_signatures: int = 0
    receiver_signatures: int = 0

    def add(self, kind: str, receipt: Any) -> None:
        """Count one transaction of `kind` (it must have succeeded)."""
        assert receipt["status"] == 1, kind  # noqa: S101 - a failed transaction would make the count meaningless
        self.gas[kind] = self.gas.get(kind, 0) + int(receipt["gasUsed"])
        self.transactions[kind] = self.transactions.get(kind, 0) + 1


def _send(devnet: Devnet, call: Any) -> Any:
    web3 = devnet.web3()
    return web3.eth.wait_for_transaction_receipt(call.transact({"from": devnet.facilitator.address}))


def _sign(account: LocalAccount, digest: bytes) -> bytes:
    return sign_digest(PrivateKey(bytes(account.key)), digest)


def exact_calls(devnet: Devnet, payer: LocalAccount, calls: int, price: int) -> Tally:
    """`calls` EIP-3009 `transferWithAuthorization`s of `price` to the payee."""
    tally = Tally()
    token = devnet.contract("TestUSDC", devnet.usdc)
    transfer = token.get_function_by_signature(
        "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,bytes)"
    )
    for _ in range(calls):
        authorization = {
            "from": payer.address, "to": devnet.payee.address, "value": price, "validAfter": 0,
            "validBefore": devnet.chain_time() + 600, "nonce": secrets.token_bytes(32),
        }  # fmt: skip
        typed = eip712.transfer_with_authorization(
            token_name=TOKEN_NAME, token_version=TOKEN_VERSION, chain_id=devnet.chain_id, token=devnet.usdc,
            authorization=authorization,
        )  # fmt: skip
        digest = typed_data_digest(typed)
        assert digest is not None  # noqa: S101 - fast712 knows this shape
        tally.payer_signatures += 1
        tally.add("transfer", _send(devnet, transfer(*authorization.values(), _sign(payer, digest))))
    return tally


@dataclass
class ChannelRun:
    """One payer's channel on the devnet, with the state the client and server would keep."""

    devnet: Devnet
    payer: LocalAccount
    authorizer: LocalAccount = field(default_factory=Account.create)
    tally: Tally = field(default_factory=Tally)
    balance: int = 0
    charged: int = 0

    def __post_init__(self) -> None:
        self.settlement = self.devnet.contract("X402BatchSettlement", self.devnet.batch_settlement)
        self.config = channel.ChannelConfig(
            self.payer.address, self.payer.address, self.devnet.payee.address, self.authorizer.address,
            self.devnet.usdc, channel.MIN_WITHDRAW_DELAY,
        )  # fmt: skip
        self.id = channel.channel_id(self.config, self.devnet.chain_id)

    def deposit(self, amount: int) -> None:
        """An EIP-3009 deposit of `amount`, signed by the payer, relayed by the facilitator."""
        salt, valid_before = secrets.randbits(256), self.devnet.chain_time() + 600
        digest = channel_deposit.receive_with_authorization_digest(
            token_name=TOKEN_NAME, token_version=TOKEN_VERSION, chain_id=self.devnet.chain_id, token=self.devnet.usdc,
            payer=self.payer.address, value=amount, valid_after=0, valid_before=valid_before,
            nonce=channel_deposit.erc3009_deposit_nonce(self.id, salt),
        )  # fmt: skip
        data = channel_deposit.erc3009_collector_data(
            valid_after=0, valid_before=valid_before, salt=salt, signature=_sign(self.payer, digest)
        )
        self.tally.payer_signatures += 1
        call = self.settlement.functions.deposit(self.config.as_abi(), amount, self.devnet.erc3009_collector, data)
        self.tally.add("deposit", _send(self.devnet, call))
        self.balance += amount

    def pay(self, price: int) -> tuple[int, bytes]:
        """One call: the voucher the client signs (charged + price); the server charges the full price."""
        ceiling = self.charged + price
        signature = _sign(self.payer, channel.voucher_digest(self.id, ceiling, self.devnet.chain_id))
        self.tally.payer_signatures += 1
        self.charged = ceiling
        return ceiling, signature

    def claim(self, ceiling: int, signature: bytes) -> None:
        """``claimWithSignature`` of the latest voucher, for everything charged so far."""
        row = ((self.config.as_abi(), ceiling), signature, self.charged)
        entry = channel.ClaimEntry(self.id, ceiling, self.charged)
        batch = _sign(self.authorizer, channel.claim_batch_digest([entry], self.devnet.chain_id))
        self.tally.receiver_signatures += 1
        self.tally.add("claim", _send(self.devnet, self.settlement.functions.claimWithSignature([row], batch)))

    def close(self) -> None:
        """Sweep the claimed funds to the receiver, and refund the escrow left unspent."""
        self.tally.add(
            "settle", _send(self.devnet, self.settlement.functions.settle(self.config.receiver, self.config.token))
        )
        left = self.balance - self.charged
        if left > 0:
            digest = channel.refund_digest(self.id, 0, left, self.devnet.chain_id)
            self.tally.receiver_signatures += 1
            refund = self.settlement.functions.refundWithSignature(
                self.config.as_abi(), left, 0, _sign(self.authorizer, digest)
            )
            self.tally.add("refund", _send(self.devnet, refund))


def channel_calls(devnet: Devnet, payer: LocalAccount, calls: int, price: int, deposit: int, claim_every: int) -> Tally:
    """`calls` paid calls over one channel, topped up by `deposit` and claimed every `claim_every` calls."""
    run = ChannelRun(devnet, payer)
    latest: tuple[int, bytes] | None = None
    for number in range(1, calls + 1):
        if run.charged + price > run.balance:
            run.deposit(deposit)
        latest = run.pay(price)
        if number % claim_every == 0 or number == calls:
            run.claim(*latest)
    run.close()
    return run.tally


def _row(name: str, tally: Tally, calls: int, baseline: int) -> str:
    total = sum(tally.gas.values())
    kinds = ", ".join(f"{tally.transactions[kind]:,} {kind}" for kind in tally.transactions)
    return (
        f"| {name} | {tally.payer_signatures:,} | {tally.receiver_signatures:,} | {kinds} "
        f"| {total:,} | {total / calls:,.0f} | {total / baseline:.3f} |"
    )


def _per_kind(tallies: list[Tally]) -> list[str]:
    """One table row per transaction kind: how many ran over all contenders, and their mean gas."""
    rows = []
    for kind in dict.fromkeys(kind for tally in tallies for kind in tally.gas):
        count = sum(tally.transactions.get(kind, 0) for tally in tallies)
        gas = sum(tally.gas.get(kind, 0) for tally in tallies)
        rows.append(f"| {kind} | {count:,} | {gas / count:,.0f} |")
    return rows


def main(argv: list[str] | None = None) -> None:
    """Run every contender on one fresh chain, print and write the table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000, help="paid calls per contender (default 1000)")
    parser.add_argument("--price", type=int, default=1_000, help="atomic units per call (default 1000: $0.001)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)
    calls, price = args.calls, args.price
    with Anvil() as anvil:
        devnet = deploy_devnet(anvil.rpc_url, payers=4, payer_usdc=10 * calls * price)
        contenders = [
            ("exact (EIP-3009), one transfer per call", exact_calls(devnet, devnet.payers[0], calls, price)),
            ("channel, deposits of 10 x price, claim every 100", channel_calls(
                devnet, devnet.payers[1], calls, price, 10 * price, 100)),
            ("channel, one deposit, claim every 100", channel_calls(
                devnet, devnet.payers[2], calls, price, calls * price, 100)),
            ("channel, one deposit, one claim", channel_calls(
                devnet, devnet.payers[3], calls, price, calls * price, calls)),
        ]  # fmt: skip
    baseline = sum(contenders[0][1].gas.values())
    rows = [_row(name, tally, calls, baseline) for name, tally in contenders]
    markdown = "\n".join([
        f"## On-chain cost of {calls:,} paid calls: exact vs payment channels (`bench/count_channel_gas.py`)",
        "",
        f"{calls:,} calls of {price:,} atomic units each, every transaction sent on anvil by the facilitator, who "
        "pays all the gas (the payer pays none). Channel calls are vouchers, off chain; the run ends with one sweep "
        "to the receiver and a refund of unspent escrow. Gas is counted, not timed; the ratio is against `exact`.",
        "",
        "| contender | payer signatures | receiver-side signatures | transactions | gas | gas per call | ratio |",
        "|---|---:|---:|---|---:|---:|---:|",
        *rows,
        "",
        "| transaction | count (all contenders) | mean gas |",
        "|---|---:|---:|",
        *_per_kind([tally for _, tally in contenders]),
        "",
        f"Run {today()} on {machine()}; {versions('web3')}, anvil from node_modules. "
        f"Command: `python -m bench.count_channel_gas --calls {calls} --price {price}`.",
    ])  # fmt: skip
    print(markdown)
    if not args.no_write:
        write_section("channel-gas", markdown)


if __name__ == "__main__":
    main()
