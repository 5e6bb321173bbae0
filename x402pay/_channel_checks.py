"""What a payer believes of a ``batch-settlement`` server's answers: pure checks, no I/O.

After a paid request the server reports ``chargedAmount`` and the channel's state. They must agree with what we
know: the charge at most this request's maximum, the cumulative charge exactly ours plus it, the channel the one we
paid through, its balance ours (and, after a deposit, the chain's). Anything else is a lie (`problem_with` says
which), and the payer stops paying that server.

A corrective 402 (the server's record of the channel differs from ours, say after we lost our store) is believed
only as far as it is proven: a ``voucherState`` whose signature recovers to our own payer authorizer for this
channel, a charge within that voucher and not below what the chain shows claimed. Without that proof only the
chain is believed. Nothing here can make us sign a ceiling above what we signed before or the chain allows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from x402pay._channel_chain import OnChain
from x402pay._protocol.channel_extra import ChannelState, ResponseExtra, VoucherState
from x402pay._schemes.channel import voucher_digest
from x402pay._schemes.fast712 import recover_signer

if TYPE_CHECKING:
    from x402pay.ledger._channels import ChannelRecord


@dataclass(frozen=True)
class Expected:
    """What a truthful answer must say: this request's maximum, the channel, the cumulative charge before it, and
    the balance after it (ours, with any deposit this request made)."""

    channel_id: bytes
    maximum: int
    charged_before: int
    balance: int


def problem_with(extra: ResponseExtra, expected: Expected) -> str | None:
    """How the server's report contradicts `expected`, or None."""
    charged = extra.charged_amount
    if charged is None:
        return "the response names no chargedAmount"
    if charged > expected.maximum:
        return f"charged {charged}, above this request's maximum {expected.maximum}"
    state = extra.channel_state
    if state is None:
        return None
    return _state_problem(state, expected, charged)


def _state_problem(state: ChannelState, expected: Expected, charged: int) -> str | None:
    if state.channel_id != expected.channel_id:
        return f"reported channel 0x{state.channel_id.hex()[:16]}..., not the one paid through"
    cumulative = state.charged_cumulative_amount
    if cumulative is not None and cumulative != expected.charged_before + charged:
        return f"reported a cumulative charge of {cumulative}, not {expected.charged_before} + {charged}"
    if state.balance != expected.balance:
        return f"reported a channel balance of {state.balance}, not {expected.balance}"
    return None


@dataclass(frozen=True)
class Recovered:
    """What a corrective 402 lets us adopt: the cumulative `charged`, and the `signed_max` we are proven to have
    signed (0 when only the chain was believed)."""

    charged: int
    signed_max: int
    balance: int
    proven: bool


def recover(
    channel_id: bytes, chain_id: int, payer_authorizer: str, state: ChannelState | None,
    voucher: VoucherState | None, chain: OnChain,
) -> Recovered:  # fmt: skip
    """What to believe after a corrective 402 (see the module's docstring)."""
    fallback = Recovered(chain.total_claimed, 0, chain.balance, proven=False)
    if state is None or state.channel_id != channel_id or state.charged_cumulative_amount is None:
        return fallback
    if voucher is None or voucher.signature is None or voucher.signed_max_claimable is None:
        return fallback
    ceiling, charged = voucher.signed_max_claimable, state.charged_cumulative_amount
    digest = voucher_digest(channel_id, ceiling, chain_id)
    signer = recover_signer(digest, voucher.signature)
    if signer is None or signer.lower() != payer_authorizer.lower():
        return fallback
    if not chain.total_claimed <= charged <= ceiling or charged > chain.balance:
        return fallback
    return Recovered(charged, ceiling, chain.balance, proven=True)


def only_just_sent(record: ChannelRecord, amount: int, believed: Recovered) -> bool:
    """Whether a corrective 402's proof is only the voucher this request sent (our record, kept since our first
    voucher here, has none that high): it proves no earlier charge. A record started from the chain cannot tell."""
    ceiling = record.charged + amount
    return believed.proven and record.signed_key is not None and believed.signed_max == ceiling > record.signed_max


def served_before(key: str, record: ChannelRecord, believed: Recovered) -> bool:
    """Whether a corrective 402 proves that the voucher this logical request signed before (our highest, signed
    under `key`) was served and charged: a retry after a lost answer, which must not be paid again."""
    return (
        believed.proven
        and record.signed_key == key
        and believed.signed_max == record.signed_max
        and believed.charged > record.charged
    )
