"""The demo's payment channel: several calls of ``GET /v1/fortune/channel`` paid by one deposit into an on-chain
escrow and one off-chain voucher each, then the payer's channel book checked against the chain's ``channels(id)``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from x402pay._payment import Payment
from x402pay.cli.common import usdc_text

#: Calls paid through the channel (one deposit of ten times the price covers them all).
CHANNEL_CALLS = 5


@dataclass(frozen=True)
class ChannelRun:
    """What the channel calls did: their payments, the payer's book of the channel, and the chain's view of it."""

    payments: list[Payment]
    deposited: int
    charged: int
    escrow_left: int
    chain_balance: int
    chain_claimed: int

    @property
    def deposits(self) -> list[Payment]:
        """The calls that carried a deposit (their answer names its transaction)."""
        return [payment for payment in self.payments if payment.transaction]

    @property
    def verified(self) -> bool:
        """One deposit, on chain as the book says; every call charged, the book's spend their sum."""
        charged = sum(payment.settled_amount or 0 for payment in self.payments)
        return (
            len(self.deposits) == 1
            and self.chain_balance == self.deposited
            and self.charged == charged
            and self.escrow_left == self.deposited - self.charged
            and all(payment.mismatch is None for payment in self.payments)
        )


def pay_channel(http: Any, url: str, ledger: Any, rpc_url: str, calls: int = CHANNEL_CALLS) -> ChannelRun:
    """`calls` paid fortunes from the channel route; the channel as the book and the chain then see it."""
    from x402pay import payment_of
    from x402pay._channel_chain import read_channel
    from x402pay._rpc import web3_for

    payments = []
    for _ in range(calls):
        response = http.get(url + "/v1/fortune/channel")
        response.raise_for_status()
        payment = payment_of(response)
        if payment is None:
            raise RuntimeError("the channel route answered without a payment")
        payments.append(payment)
    (record,) = ledger.channels.all()
    chain = read_channel(web3_for(rpc_url), bytes.fromhex(record.channel_id[2:]))
    return ChannelRun(payments, record.deposited, record.charged, record.escrow - record.charged, chain.balance,
                      chain.total_claimed)  # fmt: skip


def describe_channel(run: ChannelRun) -> list[str]:
    """The lines the demo prints for the channel calls."""
    deposit = run.deposits[0] if run.deposits else None
    tx = (deposit.transaction or "-")[:14] if deposit is not None else "none"
    verdict = "verified" if run.verified else "NOT verified"
    return [
        f"    deposit        {usdc_text(run.deposited)} USDC into escrow, tx {tx} "
        f"(one, for all {len(run.payments)} calls)",
        f"    vouchers       {len(run.payments)} signed off chain, no transaction each; "
        f"charged {usdc_text(run.charged)} USDC",
        f"    escrow left    {usdc_text(run.escrow_left)} USDC, the payer's to spend or take back",
        f"    on chain       channels(id): balance {usdc_text(run.chain_balance)}, claimed "
        f"{usdc_text(run.chain_claimed)} USDC; the book agrees: {verdict}",
    ]
