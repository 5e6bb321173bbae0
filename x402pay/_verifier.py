"""The transport's on-chain check of a receipt: one RPC client, a bounded wait for the chain to catch up."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

from x402pay._payment import Payment
from x402pay._protocol.networks import settlement_patience
from x402pay._rpc import web3_for

_RETRY_PAUSE: Final = 0.2
#: Checks that fail while the chain (or the RPC) has not caught up yet: worth asking again, within the patience.
_RETRYABLE_CHECKS: Final = frozenset({"rpc", "transaction", "confirmations", "locate"})


class Verifier:
    """Checks a Payment's receipt against the chain (sync Web3); `submit` runs work on its background thread.

    `patience` is how long a check waits for a just-reported transaction to show (None: five blocks of the
    payment's chain, at least ten seconds) before a transaction still missing is a lie and anything else undecided
    stays pending; `rpc_timeout` bounds each RPC request (web3's default would hold an inline check for 30 s).
    """

    def __init__(
        self, rpc_url: str, *, background: bool, confirmations: int, patience: float | None, rpc_timeout: float
    ) -> None:
        self.confirmations = confirmations
        self.patience = patience
        self._web3 = web3_for(rpc_url, timeout=rpc_timeout)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="x402pay-verify") if background else None

    def check(self, payment: Payment) -> Any:
        """Verify `payment`'s receipt; asks again while the chain has not caught up, for up to the patience."""
        from x402pay.verify import verify_claim

        claim = claim_of(payment)
        patience = self.patience if self.patience is not None else settlement_patience(payment.requirement.chain_id)
        deadline = time.monotonic() + patience
        while True:
            verification = verify_claim(self._web3, claim, confirmations=self.confirmations)
            undecided = verification.verdict in ("pending", "not_found")  # not_found: an RPC may lag the server's
            if not undecided or str(verification.check) not in _RETRYABLE_CHECKS:
                return verification
            if time.monotonic() > deadline:  # a round takes at most a few RPC timeouts: the wait stays bounded
                return verification
            time.sleep(_RETRY_PAUSE)

    def submit(self, work: Callable[[], None]) -> None:
        """Run `work` on the background thread."""
        if self._pool is None:
            raise RuntimeError("this verifier checks inline; it has no background thread")
        self._pool.submit(work)

    def close(self) -> None:
        """Finish queued verifications and stop the background thread."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)


def claim_of(payment: Payment) -> Any:
    """The on-chain claim a Payment's receipt makes."""
    from x402pay.verify import Claim

    receipt = payment.receipt
    network = receipt.network if receipt is not None else None
    return Claim.from_signed(payment.signed, payment.settled_amount, payment.transaction, network=network)


def is_fraud(verification: Any) -> bool:
    """A contradiction the server is to blame for: a mismatch (but an RPC on another chain than signed is our own
    mistake), or a claimed settlement that is still nowhere on chain after the verifier's patience ran out."""
    if verification.verdict == "not_found":
        return True
    if verification.verdict != "mismatch":
        return False
    return not (str(verification.check) == "chain_id" and verification.claim.claimed_chain_id is None)
