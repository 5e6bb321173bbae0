"""`LocalFacilitator`: verifies and settles EVM payments itself, with its own key (it pays the gas).

Supports ``exact`` by EIP-3009 ``transferWithAuthorization`` or by Permit2 through the x402 exact proxy, and
``upto`` by Permit2 through the x402 upto proxy (whose witness names this facilitator as the only caller).
A Permit2 payer without allowance may carry an EIP-2612 permit for Permit2 (the ``eip2612GasSponsoring``
extension): it is checked, and the settlement goes through the proxy's ``settleWithPermit`` instead.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

import anyio.to_thread
from eth_account.signers.base import BaseAccount
from eth_typing import ChecksumAddress
from web3 import Web3
from web3.contract.contract import Contract

from x402pay._allowance import GAS_SPONSORING
from x402pay._jsonrpc import BatchSender, HttpJsonRpc, provider_batch
from x402pay._jsonrpc_async import AsyncBatchSender, AsyncHttpJsonRpc
from x402pay._protocol.models import PaymentPayload, PaymentRequirements, SettleResponse
from x402pay._protocol.networks import caip2
from x402pay._rpc import web3_for
from x402pay.errors import FacilitatorError
from x402pay.server import _calldata
from x402pay.server._at_once import AtOnce, payer_of
from x402pay.server._chainstate import RPC_FAILURES
from x402pay.server._channel_facilitator import ChannelFacilitation
from x402pay.server._channel_rules import CHANNEL_SCHEME
from x402pay.server._evm import (
    Authorization,
    Permit2Authorization,
    Refusal,
    chain_of,
    check_signer,
    check_terms,
    failed_settlement,
    payload_method,
    payment_key,
    read_authorization,
    required_method,
    signed_by_payer,
)
from x402pay.server._facilitator import SupportedKind, SupportedResponse, VerifyResponse
from x402pay.server._mirror import Mirrors
from x402pay.server._sender import Sender
from x402pay.server._settlements import SETTLEMENT_PENDING, Broadcast, SettlementStore, answer, reconcile_pending
from x402pay.server._sponsoring import Eip2612Permit, read_permit


class LocalFacilitator(AtOnce):
    """A facilitator that checks payments against the chain and settles them with its own account.

    `web3` is a ``Web3`` or an RPC URL; `account` is any eth-account signer (``Account.from_key(...)``) holding
    gas money. Verification checks, in order: scheme and network, the payload's shape, recipient, amount, token
    and spender, the time window (against the later of the latest block and the wall clock), for upto that this
    facilitator is the witness's, the EIP-712 signature, the unused nonce, the Permit2 allowance (or, when it is
    short, the payment's EIP-2612 permit for Permit2: terms, token nonce, signature), the balance, and finally a
    simulation of the settlement call in the pending block (the one it would be mined in, however long ago the
    latest block was mined; the latest block on a node that refuses the pending one for calls). A payment that
    passes at once is checked on the event loop, its batch of chain reads awaited there (given an RPC URL; a
    ready-made ``Web3``'s provider is used from a worker thread); everything else, and every blocking web3 call,
    runs in a worker thread.

    Settling waits up to `receipt_timeout` seconds for the transaction's receipt. A transaction sent and not
    mined by then is answered ``settlement_pending`` with its hash in ``transaction``, never as a failure: it
    may still charge the payer. Every broadcast is recorded in `settlements` (a `SettlementStore`, or the path
    of its SQLite file; in memory by default, which a restart forgets) before it is sent, and a payment
    presented again while its transaction is pending is never broadcast again: verify accepts it and settle
    follows the stored transaction. `reconcile` decides the pending ones from the chain.

    A payment that passes on chain leaves the payer's balance and Permit2 allowance behind, as read in the same
    batch: for `verify_ttl` seconds (30 by default) the payer's next payments are checked against them locally
    (terms, signature, funds less what this facilitator took since, nonces it settled), with no chain request,
    and settled as usual (`x402pay.server._mirror` says what that risks, and for whom). ``verify_ttl=0`` asks the
    chain for every payment.
    """

    def __init__(
        self,
        web3: Web3 | str,
        account: BaseAccount,
        *,
        receipt_timeout: float = 30.0,
        settlements: SettlementStore | str | Path | None = None,
        verify_ttl: float = 30.0,
        channel_authorizer: BaseAccount | None = None,
    ) -> None:
        if not receipt_timeout > 0:
            raise ValueError(f"receipt_timeout is a positive number of seconds, not {receipt_timeout!r}")
        self._mirrors = Mirrors(verify_ttl)
        self._web3 = web3 if isinstance(web3, Web3) else web3_for(web3)
        self._rpc: BatchSender = provider_batch(web3) if isinstance(web3, Web3) else HttpJsonRpc(web3).batch
        # A ready-made Web3's provider may carry headers and auth of its own: its batches go through it, in a thread.
        self._arpc: AsyncBatchSender | None = None if isinstance(web3, Web3) else AsyncHttpJsonRpc(web3).batch
        self._account = account
        self._receipt_timeout = receipt_timeout
        if not isinstance(settlements, SettlementStore):
            settlements = SettlementStore(":memory:" if settlements is None else settlements)
        self.settlements = settlements
        self._sender = Sender(self._rpc, account, settlements, lambda: self.chain_id)
        self._contracts: dict[tuple[str, int], Contract] = {}
        self._tokens: set[str] = set()  # assets seen holding code
        self.channels = ChannelFacilitation(self, channel_authorizer, self._mirrors)

    @property
    def web3(self) -> Web3:
        """The connection to the chain."""
        return self._web3

    @property
    def receipt_timeout(self) -> float:
        """Seconds a settlement waits for its receipt before it is answered pending."""
        return self._receipt_timeout

    @property
    def address(self) -> ChecksumAddress:
        """The account that sends settlements (and that upto witnesses must name)."""
        return self._account.address

    @cached_property
    def chain_id(self) -> int:
        """The chain id of the connected node (asked once)."""
        return int(self._web3.eth.chain_id)

    async def verify(self, payload: PaymentPayload, requirements: PaymentRequirements) -> VerifyResponse:
        """Check the payment against the requirement and the chain (or a repeat payer's mirror); nothing is sent."""
        known = self._verify_locally(payload, requirements)
        if known is None:
            known = await self._verify_at_once(payload, requirements)
        if known is not None:
            return known
        return await anyio.to_thread.run_sync(self.verify_blocking, payload, requirements)

    async def settle(self, payload: PaymentPayload, requirements: PaymentRequirements) -> SettleResponse:
        """Re-verify, then send the settlement and wait for its receipt (upto with amount 0: no transaction)."""
        return await anyio.to_thread.run_sync(self.settle_blocking, payload, requirements)

    async def supported(self) -> SupportedResponse:
        """exact (v1, v2) and upto (v2) on the connected chain; upto's ``facilitatorAddress`` is this account.

        Lists the ``eip2612GasSponsoring`` extension: this facilitator submits payers' EIP-2612 permits.
        """
        return await anyio.to_thread.run_sync(self.supported_blocking)

    def verify_blocking(self, payload: PaymentPayload, requirements: PaymentRequirements) -> VerifyResponse:
        """`verify`, in the calling thread."""
        if requirements.scheme == CHANNEL_SCHEME:
            try:
                return self.channels.verify(payload, requirements)
            except RPC_FAILURES as exc:
                raise FacilitatorError(f"verifying a channel payment on chain {self.chain_id} failed: {exc}") from exc
        payer = None
        try:
            auth = self._read(payload, requirements)
            payer = auth.payer
            if self._in_flight(auth, requirements):  # settle follows its transaction instead of sending one
                return VerifyResponse.valid(payer)
            if not self._passes_at_once(auth, requirements, payload.extensions):
                permit = self._check(auth, requirements, payload.extensions)
                self._simulate(self._settle_call(auth, requirements.asset, requirements.amount, permit), auth.codes)
        except Refusal as refusal:
            return VerifyResponse.invalid(refusal.reason, refusal.message, payer)
        except RPC_FAILURES as exc:
            raise FacilitatorError(f"verifying on chain {self.chain_id} failed: {exc}") from exc
        self._mirrors.hold(payer_of(auth, requirements), payment_key(auth, requirements), auth.amount, auth.deadline)
        return VerifyResponse.valid(payer)

    def _verify_locally(self, payload: PaymentPayload, requirements: PaymentRequirements) -> VerifyResponse | None:
        """A repeat payer's payment against its fresh mirror: valid; refused, as settled here before; or None, for
        the chain to decide (a payer not mirrored, funds short, a check failing: the chain path says which)."""
        if not self._mirrors or read_permit(payload.extensions) is not None:
            return None  # no mirror yet (nor, then, a chain id known without asking)
        try:
            auth = self._read(payload, requirements)
            payer, key = payer_of(auth, requirements), payment_key(auth, requirements)
            known = self._mirrors.check(payer, key, auth.amount, permit2=isinstance(auth, Permit2Authorization))
            if known == "settled":
                return VerifyResponse.invalid(auth.codes.nonce_used, "this payment was settled already", auth.payer)
            if known != "covered":
                return None
            check_terms(auth, requirements, now=self._mirrors.now())
            self._check_witness(auth)
        except Refusal:
            return None
        if not signed_by_payer(auth, requirements):  # eth-account decides, in a worker thread
            return None
        self._mirrors.hold(payer, key, auth.amount, auth.deadline)
        return VerifyResponse.valid(auth.payer)

    async def _verify_at_once(
        self, payload: PaymentPayload, requirements: PaymentRequirements
    ) -> VerifyResponse | None:
        """`verify_blocking`'s common case on the event loop: a payment that passes at once, or that its terms refuse
        (`AtOnce.passes_at_once_async`). None leaves it to `verify_blocking`, in a worker thread, as it does a chain
        id or settling block not learnt yet and a channel."""
        if not {"chain_id", "settling_block"} <= vars(self).keys() or requirements.scheme == CHANNEL_SCHEME:
            return None
        payer = None
        try:
            auth = self._read(payload, requirements)
            payer = auth.payer
            if not await self._passes_at_once_async(auth, requirements, payload.extensions):
                return None
        except Refusal as refusal:
            return VerifyResponse.invalid(refusal.reason, refusal.message, payer)
        except RPC_FAILURES as exc:
            raise FacilitatorError(f"verifying on chain {self.chain_id} failed: {exc}") from exc
        self._mirrors.hold(payer_of(auth, requirements), payment_key(auth, requirements), auth.amount, auth.deadline)
        return VerifyResponse.valid(auth.payer)

    def settle_blocking(self, payload: PaymentPayload, requirements: PaymentRequirements) -> SettleResponse:
        """`settle`, in the calling thread."""
        if requirements.scheme == CHANNEL_SCHEME:
            try:
                return self.channels.settle(payload, requirements)
            except RPC_FAILURES as exc:
                return failed_settlement(requirements, "unexpected_settle_error", f"{type(exc).__name__}: {exc}", None)
        try:
            auth = self._read(payload, requirements)
        except Refusal as refusal:
            return failed_settlement(requirements, refusal.reason, refusal.message, None)
        payer, key = payer_of(auth, requirements), payment_key(auth, requirements)
        try:
            known = self.settlements.find(key)
            if known is not None and known.state != "failed":  # sent before: follow it, never send it twice
                return self._noted(auth, requirements, self.followed(known))
            charge = self._charge(auth, requirements)
            signed = requirements.model_copy(update={"amount": auth.amount})
            at_once = self._passes_at_once(auth, signed, payload.extensions, simulate=False)
            permit = None if at_once else self._check(auth, signed, payload.extensions)
            if charge == 0:
                if at_once:
                    self._check_at(auth, signed, self.now())
                self._mirrors.release(payer, key)
                return SettleResponse(success=True, network=requirements.network, payer=auth.payer, amount=0)
            check = functools.partial(self._check_at, auth, signed) if at_once else None
            sent = self._send(auth, requirements, charge, permit, check)
            self._mirrors.sent(payer, key, charge, auth.deadline)
        except Refusal as refusal:
            self._mirrors.failed(payer, key)
            return failed_settlement(requirements, refusal.reason, refusal.message, auth.payer)
        except RPC_FAILURES as exc:
            return failed_settlement(
                requirements, "unexpected_settle_error", f"{type(exc).__name__}: {exc}", auth.payer
            )
        return self._noted(auth, requirements, self.followed(sent))

    def _noted(self, auth: Authorization, requirements: PaymentRequirements, broadcast: Broadcast) -> SettleResponse:
        """The answer for `broadcast`, its outcome noted in the payer's mirror (a failure drops the mirror)."""
        settled = answer(broadcast)
        payer, key = payer_of(auth, requirements), payment_key(auth, requirements)
        if settled.success:
            self._mirrors.settled(payer, key)
        elif settled.error_reason != SETTLEMENT_PENDING:
            self._mirrors.failed(payer, key)
        return settled

    def reconcile(self) -> list[Broadcast]:
        """Decide the pending broadcasts from the chain: mined (settled or reverted), or expired unmined (failed).

        Returns them as they now stand; those still pending are the ones that may yet be mined.
        """
        return reconcile_pending(self._rpc, self.settlements)

    def supported_blocking(self) -> SupportedResponse:
        """`supported`, in the calling thread."""
        network = caip2(self.chain_id)
        kinds = [
            SupportedKind(x402_version=2, scheme="exact", network=network),
            SupportedKind(x402_version=1, scheme="exact", network=network),
            SupportedKind(x402_version=2, scheme="upto", network=network, extra={"facilitatorAddress": self.address}),
            SupportedKind(x402_version=2, scheme=CHANNEL_SCHEME, network=network, extra=self._channel_kind_extra()),
        ]
        return SupportedResponse(kinds=kinds, extensions=[GAS_SPONSORING], signers={"eip155:*": [self.address]})

    def _channel_kind_extra(self) -> dict[str, Any] | None:
        authorizer = self.channels.authorizer
        return None if authorizer is None else {"receiverAuthorizer": authorizer.address}

    # -- verification steps ---------------------------------------------------------------------------------

    def _read(self, payload: PaymentPayload, requirements: PaymentRequirements) -> Authorization:
        self._check_kind(payload, requirements)
        if required_method(requirements) == "eip3009" and not (
            requirements.extra_str("name") and requirements.extra_str("version")
        ):
            raise Refusal("missing_eip712_domain", "an EIP-3009 requirement needs extra.name and extra.version")
        return read_authorization(payload.payload, requirements.scheme)

    def _check_kind(self, payload: PaymentPayload, requirements: PaymentRequirements) -> None:
        if requirements.scheme not in ("exact", "upto"):
            raise Refusal("unsupported_scheme", f"this facilitator does not settle {requirements.scheme!r}")
        if requirements.scheme == "upto" and payload.x402_version != 2:
            raise Refusal("invalid_x402_version", "upto exists only in x402 v2")
        accepted = payload.accepted or {}
        scheme = payload.scheme if payload.x402_version == 1 else accepted.get("scheme")
        network = payload.network if payload.x402_version == 1 else accepted.get("network")
        if scheme != requirements.scheme:
            raise Refusal(
                "invalid_scheme", f"the payment is for {scheme!r}, the requirement is {requirements.scheme!r}"
            )
        if chain_of(network) != requirements.chain_id or requirements.chain_id != self.chain_id:
            raise Refusal("invalid_network", f"the payment is for {network!r}; this facilitator is on {self.chain_id}")
        if payload_method(payload.payload) != required_method(requirements):
            raise Refusal("invalid_payload", f"the requirement is paid by {required_method(requirements)}")

    def _check_at(self, auth: Authorization, requirements: PaymentRequirements, now: int) -> None:
        """The terms at chain time `now`, and an upto witness's facilitator."""
        check_terms(auth, requirements, now=now)
        self._check_witness(auth)

    def _check(
        self, auth: Authorization, requirements: PaymentRequirements, extensions: dict[str, Any] | None
    ) -> Eip2612Permit | None:
        """All checks; the EIP-2612 permit to settle with when the payer's Permit2 allowance needs it."""
        now = self.now()
        check_terms(auth, requirements, now=now)
        self._check_witness(auth)
        eoa = not self._web3.eth.get_code(auth.payer)  # contract wallets: the simulation asks the wallet
        if eoa:
            check_signer(auth, requirements)
        return self._check_state(auth, requirements.asset, extensions, now=now, eoa=eoa)

    # -- settlement -------------------------------------------------------------------------------------------

    @staticmethod
    def _charge(auth: Authorization, requirements: PaymentRequirements) -> int:
        charge = requirements.amount
        if requirements.scheme == "upto" and charge > auth.amount:
            raise Refusal(
                "invalid_upto_evm_payload_settlement_exceeds_amount", f"charging {charge}, signed for {auth.amount}"
            )
        return charge

    def _in_flight(self, auth: Authorization, requirements: PaymentRequirements) -> bool:
        """Whether this payment's settlement was sent and is still unmined (terms checked again, chain state not)."""
        known = self.settlements.find(payment_key(auth, requirements))
        if known is None or known.state != "pending":
            return False
        if self.followed(known, 0).state != "pending":
            return False  # decided meanwhile: the chain's state (a used nonce) answers from now on
        check_terms(auth, requirements, now=self.now())
        return True

    def _send(
        self,
        auth: Authorization,
        requirements: PaymentRequirements,
        charge: int,
        permit: Eip2612Permit | None,
        check: Callable[[int], None] | None,
    ) -> Broadcast:
        """Send the settlement charging `charge` (with `permit`, through web3's contract objects; without, from
        call data encoded here), recorded before it leaves; `check` as `send_data` runs it."""
        if permit is None:
            call = _calldata.settlement(auth, requirements.asset, charge)
            to, data = call["to"], call["data"]
        else:
            contract_call = self._settle_call(auth, requirements.asset, charge, permit)
            to, data = contract_call.address, _calldata.of_call(contract_call)
        planned = Broadcast(
            payment_key(auth, requirements), "", requirements.network, auth.payer, charge, auth.deadline
        )
        return self.send_data(to, data, planned, auth.codes, check)
