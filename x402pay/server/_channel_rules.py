"""The checks a channel payment must pass on the paid side, pure: the config against the requirement, the voucher's
signer, the cumulative rule. Failures are `Refusal` values with the official SDKs' reason codes."""

from __future__ import annotations

from typing import Final

from x402pay._protocol.channel_extra import ChannelExtra
from x402pay._protocol.channel_wire import Voucher
from x402pay._protocol.models import PaymentRequirements
from x402pay._schemes.channel import MAX_WITHDRAW_DELAY, MIN_WITHDRAW_DELAY, ChannelConfig, channel_id, voucher_digest
from x402pay._schemes.fast712 import recover_signer
from x402pay.errors import ChallengeError
from x402pay.server._evm import Refusal, same_address

#: The scheme name of payment channels.
CHANNEL_SCHEME: Final = "batch-settlement"
_PREFIX: Final = "invalid_batch_settlement_evm_"
SCHEME_MISMATCH: Final = _PREFIX + "scheme"
NETWORK_MISMATCH: Final = _PREFIX + "network_mismatch"
PAYLOAD: Final = _PREFIX + "payload_type"
CHANNEL_ID_MISMATCH: Final = _PREFIX + "channel_id_mismatch"
RECEIVER_MISMATCH: Final = _PREFIX + "receiver_mismatch"
RECEIVER_AUTHORIZER_MISMATCH: Final = _PREFIX + "receiver_authorizer_mismatch"
TOKEN_MISMATCH: Final = _PREFIX + "token_mismatch"
WITHDRAW_DELAY_MISMATCH: Final = _PREFIX + "withdraw_delay_mismatch"
WITHDRAW_DELAY_OUT_OF_RANGE: Final = _PREFIX + "withdraw_delay_out_of_range"
VOUCHER_SIGNATURE: Final = _PREFIX + "voucher_signature"
CUMULATIVE_EXCEEDS_BALANCE: Final = _PREFIX + "cumulative_exceeds_balance"
CUMULATIVE_BELOW_CLAIMED: Final = _PREFIX + "cumulative_below_claimed"
CUMULATIVE_MISMATCH: Final = _PREFIX + "cumulative_amount_mismatch"
DEPOSIT_PAYLOAD: Final = _PREFIX + "deposit_payload"
DEPOSIT_SIMULATION: Final = _PREFIX + "deposit_simulation_failed"
DEPOSIT_BELOW_MIN: Final = _PREFIX + "deposit_below_min_deposit"
CLAIM_PAYLOAD: Final = _PREFIX + "claim_payload"
CLAIM_SIMULATION: Final = _PREFIX + "claim_simulation_failed"
SETTLE_SIMULATION: Final = _PREFIX + "settle_simulation_failed"
NOTHING_TO_SETTLE: Final = _PREFIX + "nothing_to_settle"
REFUND_PAYLOAD: Final = _PREFIX + "refund_payload"
REFUND_SIMULATION: Final = _PREFIX + "refund_simulation_failed"
REFUND_AMOUNT: Final = _PREFIX + "refund_amount_invalid"
REFUND_NO_BALANCE: Final = _PREFIX + "refund_no_balance"
AUTHORIZER_NOT_CONFIGURED: Final = _PREFIX + "authorizer_not_configured"
VALID_BEFORE_EXPIRED: Final = _PREFIX + "payload_authorization_valid_before"
VALID_AFTER_IN_FUTURE: Final = _PREFIX + "payload_authorization_valid_after"
PERMIT2_SPENDER: Final = _PREFIX + "permit2_invalid_spender"
PERMIT2_AMOUNT: Final = _PREFIX + "permit2_amount_mismatch"
CHANNEL_BUSY: Final = _PREFIX + "channel_busy"
CHARGE_EXCEEDS_SIGNED: Final = _PREFIX + "charge_exceeds_signed_cumulative"


def channel_extra(requirements: PaymentRequirements) -> ChannelExtra:
    """The requirement's ``extra`` as a channel price writes it (a Refusal if it is not one)."""
    try:
        return ChannelExtra.from_wire(requirements.extra or {})
    except ChallengeError as exc:
        raise Refusal(PAYLOAD, f"the requirement is not a channel price: {exc}") from exc


def check_config(config: ChannelConfig, claimed_id: bytes, requirements: PaymentRequirements, chain_id: int) -> None:
    """The channel is the one this requirement opens: receiver, authorizer, token, delay, and its id."""
    extra = channel_extra(requirements)
    if not same_address(config.receiver, requirements.pay_to):
        raise Refusal(RECEIVER_MISMATCH, f"the channel pays {config.receiver}, not {requirements.pay_to}")
    if not same_address(config.receiver_authorizer, extra.receiver_authorizer):
        raise Refusal(RECEIVER_AUTHORIZER_MISMATCH, f"the channel's receiverAuthorizer is {config.receiver_authorizer}")
    if not same_address(config.token, requirements.asset):
        raise Refusal(TOKEN_MISMATCH, f"the channel holds {config.token}, not {requirements.asset}")
    if config.withdraw_delay != extra.withdraw_delay:
        raise Refusal(
            WITHDRAW_DELAY_MISMATCH, f"the channel's delay is {config.withdraw_delay}, not {extra.withdraw_delay}"
        )
    if not MIN_WITHDRAW_DELAY <= config.withdraw_delay <= MAX_WITHDRAW_DELAY:
        raise Refusal(WITHDRAW_DELAY_OUT_OF_RANGE, f"withdrawDelay {config.withdraw_delay} is out of range")
    if channel_id(config, chain_id) != claimed_id:
        raise Refusal(CHANNEL_ID_MISMATCH, "the voucher's channelId is not the config's")


def voucher_signer(config: ChannelConfig) -> str:
    """Who signs the channel's vouchers: its payerAuthorizer, or the payer itself when that is zero."""
    return config.payer if int(config.payer_authorizer, 16) == 0 else config.payer_authorizer


def check_voucher_signature(config: ChannelConfig, voucher: Voucher, chain_id: int) -> None:
    """The voucher is signed (ECDSA) by the channel's voucher signer."""
    digest = voucher_digest(voucher.channel_id, voucher.max_claimable_amount, chain_id)
    recovered = recover_signer(digest, voucher.signature)
    if recovered is None or not same_address(recovered, voucher_signer(config)):
        raise Refusal(VOUCHER_SIGNATURE, f"the voucher is not signed by {voucher_signer(config)}")


def check_covered(voucher: Voucher, balance: int, total_claimed: int) -> None:
    """The voucher's ceiling is within the escrow and not below what was claimed already."""
    if voucher.max_claimable_amount > balance:
        raise Refusal(CUMULATIVE_EXCEEDS_BALANCE, f"the voucher's {voucher.max_claimable_amount} exceeds {balance}")
    if voucher.max_claimable_amount < total_claimed:
        raise Refusal(
            CUMULATIVE_BELOW_CLAIMED, f"the voucher's {voucher.max_claimable_amount} < claimed {total_claimed}"
        )


def local_state_ttl(withdraw_delay: int) -> float:
    """How long a mirrored on-chain state may stand in for a facilitator's check: min(5 min, max(30 s, delay/3))."""
    return min(300.0, max(30.0, withdraw_delay / 3))
