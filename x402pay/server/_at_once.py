"""How a `LocalFacilitator` checks a payment "at once": its terms and signature here, then the chain's state in
one JSON-RPC batch (the latest block for the clock, a simulated settlement, the payer's funds for its mirror); from a
worker thread, or awaited on the event loop. And the clock a payment's time window is checked against.
"""

from __future__ import annotations

import time
from typing import Any

from x402pay._jsonrpc import BatchSender, block_timestamp
from x402pay._jsonrpc_async import AsyncBatchSender
from x402pay._protocol.models import PaymentRequirements
from x402pay.server import _calldata
from x402pay.server._chainstate import ChainState
from x402pay.server._evm import (
    Authorization,
    Permit2Authorization,
    Refusal,
    check_signer,
    check_terms,
    same_address,
    signed_by_payer,
)
from x402pay.server._mirror import Mirrors
from x402pay.server._sponsoring import read_permit


class AtOnce(ChainState):
    """The one-batch checks of `LocalFacilitator` (which sets the attributes below)."""

    _mirrors: Mirrors
    _rpc: BatchSender
    _arpc: AsyncBatchSender | None

    def _passes_at_once(
        self,
        auth: Authorization,
        requirements: PaymentRequirements,
        extensions: dict[str, Any] | None,
        *,
        simulate: bool = True,
    ) -> bool:
        """Whether the payment passes its terms, the off-chain signature check and one simulated settlement.

        The simulation runs every on-chain check (nonce, allowance, balance, signature), so a payment that passes
        needs no other read: the latest block (the clock), the simulation and the payer's funds (for its mirror) go
        in one JSON-RPC batch. False sends it through `_check`, which reads each state and
        says which check failed: a short allowance with a permit to use, a payer that is a contract, a revert.
        An asset without code is never simulated: a call to it succeeds without doing anything. Settling passes
        `simulate=False`, and checks no more here than the signature: the settlement's gas estimate is the
        simulation (its revert names the failed check), and the terms are checked at its quote's block.
        """
        if read_permit(extensions) is not None or not self._holds_code(requirements.asset):
            return False
        try:
            check_signer(auth, requirements)
        except Refusal:
            return False
        if not simulate:
            return True  # settling checks the terms at the time its transaction is quoted
        began = time.monotonic()
        answers = self._rpc(_calldata.verification(auth, requirements, self._account.address, self.settling_block))
        return self._passed_at_once(auth, requirements, answers, began)

    def _signed_at_once(
        self, auth: Authorization, requirements: PaymentRequirements, extensions: dict[str, Any] | None
    ) -> bool:
        """`_passes_at_once`'s first checks with no I/O: no permit, an asset known to hold code, a signature that
        fast712 recovers to the payer (False: the thread's checks decide)."""
        if read_permit(extensions) is not None or requirements.asset not in self._tokens:
            return False
        return signed_by_payer(auth, requirements)

    def _passed_at_once(
        self, auth: Authorization, requirements: PaymentRequirements, answers: list[dict[str, Any]], began: float
    ) -> bool:
        """The batch's answers (block, simulation, funds) judged: terms at chain time (a `Refusal`), the witness,
        the simulation; the funds go to the payer's mirror. `began`: when the batch was sent (monotonic)."""
        block, simulation, *funds = answers
        chain_time = block_timestamp(block)
        check_terms(auth, requirements, now=max(chain_time, int(time.time())))
        self._check_witness(auth)
        if "result" not in simulation:
            return False
        balance = _uint_result(funds[0])
        allowance = _uint_result(funds[1]) if len(funds) > 1 else None
        if balance is not None and (allowance is not None or len(funds) == 1):
            payer = payer_of(auth, requirements)
            self._mirrors.read(payer, balance, allowance, began=began, chain_time=chain_time)
        return True

    async def _passes_at_once_async(
        self, auth: Authorization, requirements: PaymentRequirements, extensions: dict[str, Any] | None
    ) -> bool:
        """`_passes_at_once` from async code, its batch awaited on the event loop (no worker thread). False also
        when that cannot decide without blocking I/O: no async batch, an asset whose code was not seen yet, a permit,
        a signature only eth-account can judge.

        The settlement store is not read here (a file store's lock may be held through a commit): a payment whose
        settlement is pending passes the simulation until it is mined, as `verify_blocking` lets it pass; once
        mined, its nonce is used and the thread's checks refuse it."""
        if self._arpc is None or not self._signed_at_once(auth, requirements, extensions):
            return False
        began = time.monotonic()
        block = self.settling_block  # known: `_verify_at_once` comes here only once the thread's checks learnt it
        answers = await self._arpc(_calldata.verification(auth, requirements, self._account.address, block))
        return self._passed_at_once(auth, requirements, answers, began)

    def _check_witness(self, auth: Authorization) -> None:
        upto_witness = auth.facilitator if isinstance(auth, Permit2Authorization) else None
        if upto_witness is not None and not same_address(upto_witness, self._account.address):
            raise Refusal("upto_facilitator_mismatch", f"the witness names {upto_witness}, not {self._account.address}")

    def now(self) -> int:
        """The earliest timestamp a transaction sent now can be mined at: the later of the latest block's and the
        wall clock's (anvil's clock may run ahead of the wall clock)."""
        block = self._rpc([("eth_getBlockByNumber", ["latest", False])])[0]
        return max(block_timestamp(block), int(time.time()))


def payer_of(auth: Authorization, requirements: PaymentRequirements) -> tuple[str, str]:
    """How `Mirrors` names a payer of an asset."""
    return requirements.asset.lower(), auth.payer.lower()


def _uint_result(entry: dict[str, Any]) -> int | None:
    """A uint256 ``eth_call`` result, or None if the call failed or answered something else."""
    result = entry.get("result")
    if not isinstance(result, str) or len(result) != 66 or not result.startswith("0x"):
        return None
    return int(result, 16)
