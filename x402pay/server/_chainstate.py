"""The chain state a `LocalFacilitator` reads through web3 when a payment does not pass at once (which check
failed, and the EIP-2612 permit a short Permit2 allowance may be settled with), its settlement calls, and how it
sends a transaction (through its `Sender`: quoted, signed, recorded, then broadcast) and follows it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import cached_property
from typing import Any, Literal

from eth_account.signers.base import BaseAccount
from web3 import Web3
from web3.contract.contract import Contract, ContractFunction
from web3.exceptions import ContractCustomError, ContractLogicError, ContractPanicError, Web3Exception

from x402pay._jsonrpc import BatchSender
from x402pay._protocol.abi import EXACT_PROXY_ABI, PERMIT2_ABI, TOKEN_ABI, UPTO_PROXY_ABI
from x402pay._protocol.addresses import EXACT_PERMIT2_PROXY_ADDRESS, PERMIT2_ADDRESS, UPTO_PERMIT2_PROXY_ADDRESS
from x402pay.server._abi import revert_code
from x402pay.server._calldata import PENDING, of_call, settling_probe
from x402pay.server._evm import Authorization, Codes, Eip3009Authorization, Permit2Authorization, Refusal
from x402pay.server._sender import Sender
from x402pay.server._settlements import Broadcast, SettlementStore, follow
from x402pay.server._sponsoring import Eip2612Permit, check_permit, check_permit_signer, read_permit

logger = logging.getLogger("x402pay.server")

REVERTS = (ContractCustomError, ContractLogicError, ContractPanicError)
# What a broken RPC connection raises through web3 (requests' errors are OSErrors).
RPC_FAILURES = (Web3Exception, OSError, ValueError)


class ChainState:
    """The web3 side of `LocalFacilitator`: state reads that name the failed check, settlement calls, contracts,
    sending."""

    _web3: Web3
    _account: BaseAccount
    _contracts: dict[tuple[str, int], Contract]
    _tokens: set[str]  # assets seen holding code
    _rpc: BatchSender
    _sender: Sender
    _receipt_timeout: float
    settlements: SettlementStore

    @cached_property
    def settling_block(self) -> Literal["pending", "latest"]:
        """The block tag settlements are simulated and estimated at: ``pending`` (the block they would be mined in)
        where the node takes it for calls and estimates (asked once), else ``latest``."""
        if all("result" in answer for answer in self._rpc(settling_probe(self._account.address))):
            return PENDING
        logger.info("the node refuses calls in the pending block: settlements are simulated in the latest block")
        return "latest"

    def _holds_code(self, asset: str) -> bool:
        """Whether `asset` holds code (remembered once seen: code does not leave an address)."""
        if asset not in self._tokens:
            if not self._web3.eth.get_code(Web3.to_checksum_address(asset)):
                return False
            self._tokens.add(asset)
        return True

    def _check_state(
        self, auth: Authorization, asset: str, extensions: dict[str, Any] | None, *, now: int, eoa: bool
    ) -> Eip2612Permit | None:
        token = self._contract(asset, TOKEN_ABI)
        if self._nonce_used(auth, token):
            raise Refusal(auth.codes.nonce_used, "this authorization's nonce was already used")
        permit = None
        if isinstance(auth, Permit2Authorization):
            permit = self._approval(auth, token, extensions, now=now, eoa=eoa)
        balance = token.functions.balanceOf(auth.payer).call()
        if balance < auth.amount:
            raise Refusal(auth.codes.balance, f"the payer holds {balance}, not {auth.amount}")
        return permit

    def _approval(
        self, auth: Permit2Authorization, token: Contract, extensions: dict[str, Any] | None, *, now: int, eoa: bool
    ) -> Eip2612Permit | None:
        """None when Permit2 may already move the amount; otherwise the payment's EIP-2612 permit, checked."""
        allowance = token.functions.allowance(auth.payer, PERMIT2_ADDRESS).call()
        if allowance >= auth.amount:
            return None
        permit = read_permit(extensions)
        if permit is None:
            raise Refusal("permit2_allowance_required", f"the payer allows Permit2 {allowance}, not {auth.amount}")
        check_permit(permit, auth, token.address, now=now)
        if eoa:  # a contract owner's permit is checked by the token itself, in the simulation
            domain = token.functions.DOMAIN_SEPARATOR().call()
            check_permit_signer(permit, domain, token.functions.nonces(auth.payer).call())
        return permit

    def _nonce_used(self, auth: Authorization, token: Contract) -> bool:
        if isinstance(auth, Eip3009Authorization):
            return bool(token.functions.authorizationState(auth.payer, auth.nonce).call())
        word = self._contract(PERMIT2_ADDRESS, PERMIT2_ABI).functions.nonceBitmap(auth.payer, auth.nonce >> 8).call()
        return bool(word >> (auth.nonce & 0xFF) & 1)

    def _settle_call(
        self, auth: Authorization, asset: str, amount: int, permit: Eip2612Permit | None
    ) -> ContractFunction:
        """The settlement: EIP-3009 on the token, or a proxy's ``settle`` (``settleWithPermit`` with a permit)."""
        if isinstance(auth, Eip3009Authorization):
            return self._contract(asset, TOKEN_ABI).functions.transferWithAuthorization(
                auth.payer, auth.to, auth.amount, auth.valid_after, auth.deadline, auth.nonce, auth.signature
            )
        witness = tuple(auth.witness.values())
        args: tuple[Any, ...] = (auth.permit, auth.payer, witness, auth.signature)
        proxy = self._contract(EXACT_PERMIT2_PROXY_ADDRESS, EXACT_PROXY_ABI)
        if auth.facilitator is not None:  # upto: the amount to charge follows the permit
            args = (auth.permit, amount, auth.payer, witness, auth.signature)
            proxy = self._contract(UPTO_PERMIT2_PROXY_ADDRESS, UPTO_PROXY_ABI)
        if permit is None:
            return proxy.functions.settle(*args)
        return proxy.functions.settleWithPermit(permit.contract_tuple, *args)

    def _simulate(self, call: ContractFunction, codes: Codes) -> None:
        try:
            call.call({"from": self._account.address}, block_identifier=self.settling_block)
        except REVERTS as exc:
            raise Refusal(revert_code(exc, codes), f"the settlement would revert: {exc}") from exc

    def _contract(self, address: str, abi: list[dict[str, Any]]) -> Contract:
        key = (address, id(abi))  # the ABIs are module constants; web3 parses one per contract object
        if key not in self._contracts:
            self._contracts[key] = self._web3.eth.contract(address=Web3.to_checksum_address(address), abi=abi)
        return self._contracts[key]

    def send_call(self, call: ContractFunction, planned: Broadcast, codes: Codes) -> Broadcast:
        """`send_data` of a web3 contract call."""
        return self.send_data(call.address, of_call(call), planned, codes)

    def send_data(
        self, to: str, data: str, planned: Broadcast, codes: Codes, check: Callable[[int], None] | None = None
    ) -> Broadcast:
        """Send a call of `to` with `data` as `planned` (its hash filled in), recorded before it leaves; a revert in
        gas estimation is a `Refusal` with the code `codes` give it, and `check`, given the earliest time the
        transaction can be mined at, may refuse it before it is signed. Returns the broadcast that stands for
        `planned.key` (another one recorded first is followed, never sent twice)."""
        quote = self._sender.quote(to, data, codes, self.settling_block)
        if check is not None:
            check(max(quote.chain_time, int(time.time())))
        return self._sender.send(quote, planned)

    def followed(self, broadcast: Broadcast, wait: float | None = None) -> Broadcast:
        """`broadcast` as the chain decided it within `wait` seconds (by default the receipt timeout; 0: one look)."""
        return follow(self._rpc, self.settlements, broadcast, self._receipt_timeout if wait is None else wait)
