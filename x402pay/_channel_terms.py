"""What a ``batch-settlement`` option asks of a payer, read and checked, and how much a deposit may be.

Pure: no I/O. A channel option names its receiver (``payTo``), token (``asset``) and, in ``extra``, the
``receiverAuthorizer``, the ``withdrawDelay``, the token's EIP-712 ``name``/``version`` (for EIP-3009 deposits), the
``assetTransferMethod`` and a ``minDeposit`` hint. The payer fills in the rest of the channel's config: itself as
payer and payerAuthorizer and a salt of 32 zero bytes, as the official SDKs do, so that there is one channel per
receiver, receiverAuthorizer, token and delay. The deposit is sized here, under the policy's cap, never by the
server's hint alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from x402pay._protocol.channel_extra import ChannelExtra
from x402pay._protocol.channel_wire import TransferMethod
from x402pay._protocol.models import PaymentRequirements
from x402pay._schemes.channel import MAX_WITHDRAW_DELAY, MIN_WITHDRAW_DELAY, ChannelConfig
from x402pay.errors import SigningError, SpendCapExceeded

CHANNEL_SCHEME: Final = "batch-settlement"


@dataclass(frozen=True)
class ChannelTerms:
    """A channel option's terms, checked: who receives, the token, and the option's `extra`."""

    receiver: str
    token: str
    extra: ChannelExtra

    @property
    def method(self) -> TransferMethod:
        """How deposits are authorized: ``eip3009`` (the default) or ``permit2``."""
        return self.extra.asset_transfer_method or "eip3009"

    def config(self, payer: str) -> ChannelConfig:
        """The channel `payer` pays this receiver through (payerAuthorizer: the payer; salt: 32 zero bytes)."""
        return ChannelConfig(
            payer=payer, payer_authorizer=payer, receiver=self.receiver,
            receiver_authorizer=self.extra.receiver_authorizer, token=self.token,
            withdraw_delay=self.extra.withdraw_delay,
        )  # fmt: skip


def channel_terms(requirement: PaymentRequirements) -> ChannelTerms:
    """The terms of a ``batch-settlement`` option; SigningError naming what is wrong with it."""
    extra = ChannelExtra.from_wire(requirement.extra or {}, SigningError)
    if not MIN_WITHDRAW_DELAY <= extra.withdraw_delay <= MAX_WITHDRAW_DELAY:
        raise SigningError(f"withdrawDelay {extra.withdraw_delay} is outside [900, 2592000] seconds")
    terms = ChannelTerms(receiver=requirement.pay_to, token=requirement.asset, extra=extra)
    if terms.method == "eip3009" and (extra.name is None or extra.version is None):
        raise SigningError("an eip3009 channel option must name the token's EIP-712 name and version")
    terms.config(terms.receiver)  # the addresses are checked by building a config
    return terms


def channel_terms_problem(requirement: PaymentRequirements) -> str | None:
    """Why a ``batch-settlement`` option cannot be paid, or None."""
    try:
        channel_terms(requirement)
    except SigningError as exc:
        return f"channel option: {exc}"
    return None


def deposit_size(*, needed: int, amount: int, hint: int | None, cap: int) -> int:
    """How much to deposit when the channel lacks `needed` for a request of at most `amount`.

    The server's `hint` (``minDeposit``) is taken when it is at least `amount`, else ten requests' worth; the
    result is at least `needed` and at most `cap` (the policy's `deposit_cap`). When `needed` alone is over the
    cap, `SpendCapExceeded`: nothing is signed.
    """
    if needed > cap:
        raise SpendCapExceeded(
            f"the channel needs a deposit of {needed}, above the policy's max_deposit {cap}",
            {0: f"costs more than the cap: deposit {needed} > max_deposit {cap}"},
        )
    wanted = hint if hint is not None and hint >= amount else 10 * amount
    return min(max(wanted, needed), cap)
