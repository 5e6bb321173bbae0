"""`LocalFacilitator`'s payment channels (x402 ``batch-settlement``): verify and settle deposits, claims, sweeps and
refunds on the settlement contract, with the facilitator's own sending machinery (each transaction recorded in its
`SettlementStore` before it is broadcast, followed to its receipt, pending when it is not mined in time).

Verification reads the channel (``channels``, ``pendingWithdrawals``, ``refundNonce``), checks the config against the
requirement, the voucher's signer and that its ceiling is covered; a deposit is simulated with ``eth_call`` first (in
the block it would be mined in). It reports the state read in ``extra.channelState``. Claims and refunds need the
receiverAuthorizer's signature: the server's, or this facilitator's own `authorizer` key when it holds it (it then
advertises that address).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Final

from eth_account.signers.base import BaseAccount
from eth_typing import Hash32
from eth_utils.address import to_checksum_address
from web3.contract.contract import ContractFunction

from x402pay._protocol.addresses import (
    BATCH_SETTLEMENT_ADDRESS,
    ERC3009_DEPOSIT_COLLECTOR_ADDRESS,
    PERMIT2_DEPOSIT_COLLECTOR_ADDRESS,
)
from x402pay._protocol.channel_extra import ChannelState
from x402pay._protocol.channel_wire import ChannelPayload, DepositPayload, Erc3009Deposit, parse_payload
from x402pay._protocol.models import PaymentPayload, PaymentRequirements, SettleResponse
from x402pay._schemes import channel, channel_deposit
from x402pay.errors import MalformedPayment
from x402pay.server import _channel_rules as rules
from x402pay.server._chainstate import REVERTS
from x402pay.server._channel_abi import BATCH_SETTLEMENT_ABI
from x402pay.server._channel_actions import ClaimAction, RefundAction, SweepAction, parse_action
from x402pay.server._evm import DEADLINE_BUFFER, Codes, Refusal, failed_settlement, same_address
from x402pay.server._facilitator import VerifyResponse
from x402pay.server._mirror import Mirrors
from x402pay.server._settlements import ESCROW, SETTLEMENT_PENDING, Broadcast, answer

if TYPE_CHECKING:
    from x402pay.server._local import LocalFacilitator

#: What an EIP-1271 wallet's ``isValidSignature(bytes32, bytes)`` returns for a signature it accepts.
EIP1271_MAGIC: Final = bytes.fromhex("1626ba7e")
EIP1271_IS_VALID_SIGNATURE: Final[dict[str, Any]] = {
    "type": "function",
    "name": "isValidSignature",
    "inputs": [{"type": "bytes32", "name": "hash"}, {"type": "bytes", "name": "signature"}],
    "outputs": [{"type": "bytes4", "name": ""}],
    "stateMutability": "view",
}
#: How long a claim, sweep or refund transaction is worth following before `reconcile` may call it failed.
_ACTION_LIFETIME: Final = 3600


def _codes(reason: str) -> Codes:
    return Codes(*([reason] * 8))


class ChannelFacilitation:
    """The channel half of a `LocalFacilitator` (blocking; the facilitator runs it in a worker thread)."""

    def __init__(self, owner: LocalFacilitator, authorizer: BaseAccount | None, mirrors: Mirrors) -> None:
        self._owner = owner
        self._mirrors = mirrors
        self.authorizer = authorizer
        self._contract = owner.web3.eth.contract(address=BATCH_SETTLEMENT_ADDRESS, abi=BATCH_SETTLEMENT_ABI)

    # -- reads ------------------------------------------------------------------------------------------------

    def state(self, channel_id: bytes) -> ChannelState:
        """The channel's on-chain state now (``withdrawRequestedAt``: when a pending withdrawal began, else 0)."""
        functions = self._contract.functions
        balance, claimed = functions.channels(channel_id).call()
        _, initiated = functions.pendingWithdrawals(channel_id).call()
        nonce = functions.refundNonce(channel_id).call()
        return ChannelState(channel_id, int(balance), int(claimed), int(initiated), int(nonce))

    # -- verify -----------------------------------------------------------------------------------------------

    def verify(self, payload: PaymentPayload, requirements: PaymentRequirements) -> VerifyResponse:
        """Check a client's deposit, voucher or refund against the requirement and the chain."""
        payer = None
        try:
            paid = self._client_payload(payload, requirements)
            payer = paid.config.payer
            state = self.state(paid.voucher.channel_id)
            added = paid.deposit.amount if isinstance(paid, DepositPayload) else 0
            rules.check_covered(paid.voucher, state.balance + added, state.total_claimed)
            if isinstance(paid, DepositPayload):
                deposit = self._deposit_call(paid, requirements)
                deposit.call({"from": self._owner.address}, block_identifier=self._owner.settling_block)
        except Refusal as refusal:
            return VerifyResponse.invalid(refusal.reason, refusal.message, payer)
        except REVERTS as exc:
            return VerifyResponse.invalid(rules.DEPOSIT_SIMULATION, f"the deposit would revert: {exc}", payer)
        return VerifyResponse(is_valid=True, payer=payer, extra={"channelState": state.as_wire()})

    def _client_payload(self, payload: PaymentPayload, requirements: PaymentRequirements) -> ChannelPayload:
        if requirements.chain_id != self._owner.chain_id:
            raise Refusal(rules.NETWORK_MISMATCH, f"this facilitator is on chain {self._owner.chain_id}")
        try:
            paid = parse_payload(payload.payload)
        except MalformedPayment as exc:
            raise Refusal(rules.PAYLOAD, str(exc)) from exc
        rules.check_config(paid.config, paid.voucher.channel_id, requirements, self._owner.chain_id)
        self._check_voucher_signer(paid)
        if isinstance(paid, DepositPayload):
            self._check_deposit_terms(paid)
        return paid

    def _check_voucher_signer(self, paid: ChannelPayload) -> None:
        """ECDSA by the voucher signer; a payer that is a contract and signs itself (payerAuthorizer zero) is asked
        with EIP-1271 ``isValidSignature``, as the settlement contract will ask it."""
        config, voucher = paid.config, paid.voucher
        payer = to_checksum_address(config.payer)
        if int(config.payer_authorizer, 16) != 0 or not self._owner.web3.eth.get_code(payer):
            rules.check_voucher_signature(config, voucher, self._owner.chain_id)
            return
        digest = channel.voucher_digest(voucher.channel_id, voucher.max_claimable_amount, self._owner.chain_id)
        wallet = self._owner.web3.eth.contract(address=payer, abi=[EIP1271_IS_VALID_SIGNATURE])
        try:
            answer = bytes(wallet.functions.isValidSignature(digest, voucher.signature).call())
        except (*REVERTS, ValueError):
            answer = b""
        if answer != EIP1271_MAGIC:
            raise Refusal(rules.VOUCHER_SIGNATURE, f"the wallet {config.payer} does not accept the voucher's signature")

    def _check_deposit_terms(self, paid: DepositPayload) -> None:
        auth, now = paid.deposit.authorization, self._owner.now()
        if isinstance(auth, Erc3009Deposit):
            deadline, start = auth.valid_before, auth.valid_after
        else:
            deadline, start = auth.deadline, 0
            if not same_address(auth.spender, PERMIT2_DEPOSIT_COLLECTOR_ADDRESS):
                raise Refusal(rules.PERMIT2_SPENDER, f"the permit's spender is {auth.spender}")
            wanted = (paid.config.payer, paid.config.token, paid.deposit.amount, paid.voucher.channel_id)
            if (auth.payer, auth.token, auth.amount, auth.channel_id) != wanted:
                raise Refusal(rules.PERMIT2_AMOUNT, "the permit is not for this payer, token, amount and channel")
        if deadline < now + DEADLINE_BUFFER:
            raise Refusal(rules.VALID_BEFORE_EXPIRED, f"the deposit authorization expires at {deadline}")
        if start > now:
            raise Refusal(rules.VALID_AFTER_IN_FUTURE, f"the deposit authorization is valid from {start}")

    def _deposit_call(self, paid: DepositPayload, requirements: PaymentRequirements) -> ContractFunction:
        auth = paid.deposit.authorization
        if isinstance(auth, Erc3009Deposit):
            collector = ERC3009_DEPOSIT_COLLECTOR_ADDRESS
            data = channel_deposit.erc3009_collector_data(
                valid_after=auth.valid_after, valid_before=auth.valid_before, salt=auth.salt, signature=auth.signature
            )
        else:
            collector = PERMIT2_DEPOSIT_COLLECTOR_ADDRESS
            data = channel_deposit.permit2_collector_data(
                nonce=auth.nonce, deadline=auth.deadline, signature=auth.signature
            )
        return self._contract.functions.deposit(paid.config.as_abi(), paid.deposit.amount, collector, data)

    # -- settle -----------------------------------------------------------------------------------------------

    def settle(self, payload: PaymentPayload, requirements: PaymentRequirements) -> SettleResponse:
        """Send a client's deposit, or the server's claim, sweep or refund, and wait for its receipt."""
        try:
            action = parse_action(payload.payload)
            if isinstance(action, ClaimAction):
                return self._claim(action, requirements)
            if isinstance(action, SweepAction):
                return self._sweep(action, requirements)
            if isinstance(action, RefundAction):
                return self._refund(action, requirements)
            paid = self._client_payload(payload, requirements)
            if not isinstance(paid, DepositPayload):
                raise Refusal(rules.PAYLOAD, "a voucher settles on the server; a refund needs refundNonce")
            return self._deposit(paid, requirements)
        except MalformedPayment as exc:
            return failed_settlement(requirements, rules.PAYLOAD, str(exc))
        except Refusal as refusal:
            return failed_settlement(requirements, refusal.reason, refusal.message)

    def _deposit(self, paid: DepositPayload, requirements: PaymentRequirements) -> SettleResponse:
        auth = paid.deposit.authorization
        nonce = auth.salt if isinstance(auth, Erc3009Deposit) else auth.nonce
        deadline = auth.valid_before if isinstance(auth, Erc3009Deposit) else auth.deadline
        key = f"{ESCROW}{paid.voucher.channel_id.hex()}:{nonce:x}"
        planned = Broadcast(key, "", requirements.network, paid.config.payer, paid.deposit.amount, deadline)
        call = self._deposit_call(paid, requirements)
        # The deposit takes the payer's tokens: their mirror (for exact and upto payments) counts it from now on.
        payer = (paid.config.token.lower(), paid.config.payer.lower())
        self._mirrors.sent(payer, key, paid.deposit.amount, deadline)
        try:
            settled = self._sent(call, planned, rules.DEPOSIT_SIMULATION, paid.voucher.channel_id)
        except Refusal:
            self._mirrors.failed(payer, key)
            raise
        if settled.success:
            self._mirrors.settled(payer, key)
        elif settled.error_reason != SETTLEMENT_PENDING:
            self._mirrors.failed(payer, key)
        return settled

    def _claim(self, action: ClaimAction, requirements: PaymentRequirements) -> SettleResponse:
        if not action.claims:
            raise Refusal(rules.CLAIM_PAYLOAD, "a claim needs at least one row")
        entries = [claim.entry(self._owner.chain_id) for claim in action.claims]
        digest = channel.claim_batch_digest(entries, self._owner.chain_id)
        signature = action.authorizer_signature or self._sign(digest, action.claims[0].config.receiver_authorizer)
        rows = [claim.as_abi() for claim in action.claims]
        call = self._contract.functions.claimWithSignature(rows, signature)
        planned = self._planned(f"channel-claim:{digest.hex()}", requirements, 0)
        return self._sent(call, planned, rules.CLAIM_SIMULATION, None)

    def _sweep(self, action: SweepAction, requirements: PaymentRequirements) -> SettleResponse:
        claimed, settled = self._contract.functions.receivers(action.receiver, action.token).call()
        if int(claimed) <= int(settled):
            raise Refusal(rules.NOTHING_TO_SETTLE, f"nothing claimed for {action.receiver} is left to sweep")
        key = f"channel-settle:{action.receiver}:{action.token}:{claimed}"
        planned = self._planned(key, requirements, int(claimed) - int(settled))
        call = self._contract.functions.settle(action.receiver, action.token)
        return self._sent(call, planned, rules.SETTLE_SIMULATION, None)

    def _refund(self, action: RefundAction, requirements: PaymentRequirements) -> SettleResponse:
        channel_id = channel.channel_id(action.config, self._owner.chain_id)
        state = self.state(channel_id)
        if action.refund_nonce != state.refund_nonce:
            raise Refusal(rules.REFUND_PAYLOAD, f"refundNonce is {state.refund_nonce}, not {action.refund_nonce}")
        claimed = max([state.total_claimed, *(claim.total_claimed for claim in action.claims)])
        refunded = min(action.amount, state.balance - claimed)
        if action.amount == 0 or refunded <= 0:
            raise Refusal(rules.REFUND_NO_BALANCE, "the channel has no unclaimed escrow to refund")
        digest = channel.refund_digest(channel_id, action.refund_nonce, action.amount, self._owner.chain_id)
        signature = action.refund_signature or self._sign(digest, action.config.receiver_authorizer)
        args = [action.config.as_abi(), action.amount, action.refund_nonce, signature]
        call = self._contract.functions.refundWithSignature(*args)
        if action.claims:
            call = self._with_claims(self._contract.encode_abi("refundWithSignature", args=args), action)
        planned = self._planned(f"channel-refund:{channel_id.hex()}:{action.refund_nonce}", requirements, refunded)
        return self._sent(call, planned, rules.REFUND_SIMULATION, channel_id)

    def _with_claims(self, refund_data: str, action: RefundAction) -> ContractFunction:
        entries = [claim.entry(self._owner.chain_id) for claim in action.claims]
        digest = channel.claim_batch_digest(entries, self._owner.chain_id)
        signature = action.claim_signature or self._sign(digest, action.config.receiver_authorizer)
        rows = [claim.as_abi() for claim in action.claims]
        claim = self._contract.encode_abi("claimWithSignature", args=[rows, signature])
        return self._contract.functions.multicall([bytes.fromhex(claim[2:]), bytes.fromhex(refund_data[2:])])

    def _sign(self, digest: bytes, receiver_authorizer: str) -> bytes:
        if self.authorizer is None or not same_address(self.authorizer.address, receiver_authorizer):
            raise Refusal(rules.AUTHORIZER_NOT_CONFIGURED, f"this facilitator does not hold {receiver_authorizer}")
        return bytes(self.authorizer.unsafe_sign_hash(Hash32(digest)).signature)

    def _planned(self, key: str, requirements: PaymentRequirements, amount: int) -> Broadcast:
        lifetime = int(time.time()) + _ACTION_LIFETIME
        return Broadcast(key, "", requirements.network, "", amount, lifetime)  # no payer: the receiver's own

    def _sent(
        self, call: ContractFunction, planned: Broadcast, reason: str, channel_id: bytes | None
    ) -> SettleResponse:
        owner = self._owner
        known = owner.settlements.find(planned.key)
        if known is not None and known.state != "failed":
            sent = known
        else:
            sent = owner.send_call(call, planned, _codes(reason))
        settled = answer(owner.followed(sent))
        if settled.success and channel_id is not None:
            settled = settled.model_copy(update={"extra": {"channelState": self.state(channel_id).as_wire()}})
        return settled
