"""What the payer signs for one ``batch-settlement`` request: a voucher, and with it a deposit when one is due.

Pure CPU with a local key (a remote signer is called through `Wallet`). The voucher's ceiling and the deposit's
amount are decided by the payment program, under its lease on the channel; this module only signs them, bound to the
channel: the EIP-3009 nonce derives from the channel id and a random salt, the Permit2 witness names the channel.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from x402pay._channel_terms import ChannelTerms
from x402pay._protocol.addresses import PERMIT2_DEPOSIT_COLLECTOR_ADDRESS
from x402pay._protocol.channel_wire import (
    ChannelPayload,
    Deposit,
    DepositPayload,
    Erc3009Deposit,
    Permit2Deposit,
    RefundPayload,
    Voucher,
    VoucherPayload,
)
from x402pay._schemes import channel_deposit
from x402pay._schemes.channel import ChannelConfig, voucher_typed_data
from x402pay._wallet import Wallet


@dataclass(frozen=True)
class DepositTerms:
    """A deposit to sign: `amount`, valid until `valid_before` (wall clock seconds)."""

    amount: int
    valid_before: int


@dataclass(frozen=True)
class SignedChannelPayment:
    """One request's signed channel payload and what it commits to: the voucher `ceiling` and, with a deposit,
    its amount and the deposit authorization's nonce (``0x`` hex for EIP-3009, decimal for Permit2)."""

    payload: ChannelPayload = field(repr=False)  # holds signatures: never in a repr or a log
    ceiling: int
    deposit: int = 0
    deposit_nonce: str | None = None
    valid_before: int = 0

    def as_wire(self) -> dict[str, Any]:
        """The x402 ``payload`` object."""
        return self.payload.as_wire()


def voucher(wallet: Wallet, channel_id: bytes, ceiling: int, chain_id: int) -> Voucher:
    """The payer's cumulative voucher: the channel may be claimed from up to `ceiling` in all."""
    typed = voucher_typed_data(channel_id, ceiling, chain_id)
    return Voucher(channel_id, ceiling, wallet.sign_typed_data(typed))


def _erc3009(wallet: Wallet, terms: ChannelTerms, channel_id: bytes, chain_id: int, due: DepositTerms) -> Deposit:
    salt = secrets.randbits(256)
    typed = channel_deposit.receive_with_authorization_typed_data(
        token_name=str(terms.extra.name), token_version=str(terms.extra.version), chain_id=chain_id,
        token=terms.token, payer=wallet.address, value=due.amount, valid_after=0, valid_before=due.valid_before,
        nonce=channel_deposit.erc3009_deposit_nonce(channel_id, salt),
    )  # fmt: skip
    authorization = Erc3009Deposit(0, due.valid_before, salt, wallet.sign_typed_data(typed))
    return Deposit(due.amount, authorization)


def _permit2(wallet: Wallet, terms: ChannelTerms, channel_id: bytes, chain_id: int, due: DepositTerms) -> Deposit:
    nonce = secrets.randbits(256)
    typed = channel_deposit.permit2_deposit_typed_data(
        chain_id=chain_id, token=terms.token, amount=due.amount, nonce=nonce, deadline=due.valid_before,
        channel=channel_id,
    )  # fmt: skip
    authorization = Permit2Deposit(
        payer=wallet.address, token=terms.token, amount=due.amount, spender=PERMIT2_DEPOSIT_COLLECTOR_ADDRESS,
        nonce=nonce, deadline=due.valid_before, channel_id=channel_id, signature=wallet.sign_typed_data(typed),
    )  # fmt: skip
    return Deposit(due.amount, authorization)


def sign_request(
    wallet: Wallet, terms: ChannelTerms, config: ChannelConfig, channel_id: bytes, chain_id: int, ceiling: int,
    due: DepositTerms | None,
) -> SignedChannelPayment:  # fmt: skip
    """The voucher for `ceiling`, and the deposit `due` (if any) in the option's transfer method."""
    signed_voucher = voucher(wallet, channel_id, ceiling, chain_id)
    if due is None:
        return SignedChannelPayment(VoucherPayload(config, signed_voucher), ceiling)
    sign_deposit = _erc3009 if terms.method == "eip3009" else _permit2
    deposit = sign_deposit(wallet, terms, channel_id, chain_id, due)
    authorization = deposit.authorization
    nonce = (
        "0x" + channel_deposit.erc3009_deposit_nonce(channel_id, authorization.salt).hex()
        if isinstance(authorization, Erc3009Deposit)
        else str(authorization.nonce)
    )
    payload = DepositPayload(config, signed_voucher, deposit)
    return SignedChannelPayment(payload, ceiling, due.amount, nonce, due.valid_before)


def sign_refund(
    wallet: Wallet, config: ChannelConfig, channel_id: bytes, chain_id: int, charged: int, amount: int | None
) -> SignedChannelPayment:
    """A refund request: a zero-charge voucher (ceiling = what was charged) asking for `amount` back (None: all)."""
    signed_voucher = voucher(wallet, channel_id, charged, chain_id)
    return SignedChannelPayment(RefundPayload(config, signed_voucher, amount), charged)
