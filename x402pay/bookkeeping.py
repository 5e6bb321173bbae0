"""Bookkeeping around a paid request: the spend ledger, the trust marks, and verification on chain.

The transport calls these at fixed points: `reserve` after the policy chose (the budget check, before signing),
`authorize` before the signed payment leaves the process, `lost` when no answer came, and `record` whenever the
Payment learned something (a receipt, a mismatch, a refusal). A logical request is its ``Idempotency-Key`` header
(added when absent, and carried along redirects): a repeat of it at the same origin re-sends the stored payment
(kept in the ledger, or in this process's memory without one), and another origin asking to be paid for it is
refused. One logical request, at most one signature.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, Literal

from x402pay.errors import AlreadyPaid, OriginUntrusted, ReceiptMismatch
from x402pay.ledger.errors import InvalidTransition
from x402pay.payment import Payment, PaymentStatus
from x402pay.protocol.models import PaymentRequirements
from x402pay.schemes.exact import SignedPayment
from x402pay.trust import TrustStore

logger = logging.getLogger(__name__)

IDEMPOTENCY_KEY: Final = "Idempotency-Key"
#: Without a ledger, how many paid logical requests this process remembers (to re-send, never to re-sign).
MEMORY_KEYS: Final = 4096
VerifyMode = Literal["off", "inline", "background"]
Callback = Callable[[Payment], None]
Replay = tuple[Payment, tuple[str, str]]
#: How long verification waits for a just-reported transaction to show on chain before leaving it pending.
VERIFY_PATIENCE: Final = 10.0
#: How long one verification RPC request may take before it counts as failed (the verdict stays pending).
RPC_TIMEOUT: Final = 5.0
_RETRY_PAUSE: Final = 0.2
_RETRYABLE_CHECKS: Final = frozenset({"rpc", "transaction", "confirmations", "locate"})


def stored_payment(payment: Payment, header: tuple[str, str]) -> dict[str, Any]:
    """What the ledger keeps to re-send `payment` byte for byte and to rebuild its record."""
    signed = payment.signed
    return {
        "header": list(header), "origin": payment.origin, "x402Version": payment.x402_version,
        "requirement": signed.requirement.raw, "payload": signed.payload, "payer": signed.payer,
        "amount": signed.amount, "nonce": signed.nonce, "validAfter": signed.valid_after,
        "validBefore": signed.valid_before, "method": signed.method,
    }  # fmt: skip


def restored_payment(stored: Any, entry_id: str) -> tuple[Payment, tuple[str, str]]:
    """The Payment and header of a stored payment (see `stored_payment`)."""
    signed = SignedPayment(
        requirement=PaymentRequirements.model_validate(stored["requirement"]),
        payload=stored["payload"], payer=stored["payer"], amount=int(stored["amount"]), nonce=stored["nonce"],
        valid_after=int(stored["validAfter"]), valid_before=int(stored["validBefore"]), method=stored["method"],
    )  # fmt: skip
    payment = Payment(origin=stored["origin"], x402_version=int(stored["x402Version"]), signed=signed)
    payment.ledger_entry = entry_id
    name, value = stored["header"]
    return payment, (str(name), str(value))


def idempotency_key(request: Any) -> str:
    """The request's ``Idempotency-Key``, added (a fresh UUID) when the caller did not set one."""
    key = request.headers.get(IDEMPOTENCY_KEY)
    if not key:
        key = str(uuid.uuid4())
        request.headers[IDEMPOTENCY_KEY] = key
    return str(key)


class Verifier:
    """Checks a Payment's receipt against the chain (sync Web3), inline or on a background thread."""

    def __init__(self, rpc_url: str, mode: VerifyMode, confirmations: int = 0) -> None:
        from web3 import HTTPProvider, Web3  # only when verification is asked for

        self.mode = mode
        self.confirmations = confirmations
        self.rpc_url = rpc_url
        # web3's own default waits 30 s for a stalled RPC: an inline check would hold the paid answer that long.
        self._web3 = Web3(HTTPProvider(rpc_url, request_kwargs={"timeout": RPC_TIMEOUT}))
        background = mode == "background"
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="x402pay-verify") if background else None

    def check(self, payment: Payment) -> Any:
        """Verify `payment`'s receipt; retries while the chain has not caught up, up to `VERIFY_PATIENCE` s."""
        from x402pay.verify import verify_claim

        claim = claim_of(payment)
        deadline = time.monotonic() + VERIFY_PATIENCE
        while True:
            verification = verify_claim(self._web3, claim, confirmations=self.confirmations)
            if verification.verdict != "pending" or str(verification.check) not in _RETRYABLE_CHECKS:
                return verification
            if time.monotonic() > deadline:  # a round takes at most a few RPC_TIMEOUTs: the wait stays bounded
                return verification
            time.sleep(_RETRY_PAUSE)

    def submit(self, work: Callable[[], None]) -> None:
        """Run `work` on the background thread."""
        assert self._pool is not None  # noqa: S101 - only in background mode
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
    """A mismatch that the server is to blame for (an RPC on another chain than signed is our own mistake)."""
    if verification.verdict != "mismatch":
        return False
    return not (str(verification.check) == "chain_id" and verification.claim.claimed_chain_id is None)


def _facts(payment: Payment) -> set[str]:
    facts = {
        "mismatch": payment.mismatch is not None,
        "receipt": payment.receipt is not None,
        "failed": payment.status is PaymentStatus.FAILED,
    }
    return {fact for fact, true in facts.items() if true}


def has_news(payment: Payment) -> bool:
    """Whether `payment` learned something the books have not recorded yet (cheap; no lock)."""
    return not _facts(payment) <= payment.booked


def _take_news(payment: Payment) -> set[str]:
    news = _facts(payment) - payment.booked
    payment.booked |= news
    return news


def _already_paid(key: str, paid_at: str, origin: str) -> AlreadyPaid:
    return AlreadyPaid(
        f"this request (Idempotency-Key {key[:80]!r}) was already paid at {paid_at}; {origin} asks to be "
        "paid again for it: refused"
    )


class Books:
    """The sync bookkeeping of a `PaymentTransport` (ledger optional, trust marks always)."""

    def __init__(
        self,
        ledger: Any,
        trust: TrustStore,
        verifier: Verifier | None,
        on_receipt: Callback | None,
        on_verified: Callback | None,
    ) -> None:
        self.ledger = ledger
        self.trust = trust
        self.verifier = verifier
        self.on_receipt = on_receipt
        self.on_verified = on_verified
        self._lock = threading.Lock()
        self._memory: OrderedDict[str, tuple[str, Replay]] = OrderedDict()

    def check_trust(self, origin: str) -> None:
        """Raise `OriginUntrusted` for an origin marked as having lied; nothing is signed for it."""
        reason = self.trust.reason(origin)
        if reason is not None:
            raise OriginUntrusted(f"{origin} is untrusted ({reason}); clear it with `x402pay trust reset {origin}`")

    def key(self, request: Any) -> str:
        """The logical request's idempotency key (the caller's, or one added now; redirects carry it along)."""
        return idempotency_key(request)

    def replay(self, key: str, origin: str) -> Replay | None:
        """The signed payment already made for `key` at `origin`, to re-send instead of signing again."""
        found = self._find(key)
        return found[1] if found is not None and found[0] == origin.lower() else None

    def room(self, origin: str) -> int | None:
        """The least room left in the budgets (for the announced ceiling); None without budgets."""
        if self.ledger is None:
            return None
        statuses = self.ledger.budget_status(origin=origin)
        return min((status.remaining for status in statuses), default=None)

    def reserve(
        self, key: str, origin: str, requirement: PaymentRequirements, sibling: str | None = None
    ) -> tuple[Any, Replay | None]:
        """Before signing: (a ledger entry holding the amount against the budgets, None) to sign anew, or
        (None, the stored payment) to re-send. Raises `BudgetExceeded`, or `AlreadyPaid` when this logical request
        was paid at another origin (a redirect asking to be paid again), under `key` or under `sibling`, the other
        key of the same logical request (its pre-payment, or its reactive payment)."""
        if sibling is not None:
            self._refuse_elsewhere(sibling, origin)
        found = self._find(key)
        if found is None and self.ledger is not None:
            entry = self.ledger.reserve(
                key, origin=origin, asset=requirement.asset, network=requirement.network,
                amount=requirement.amount, pay_to=requirement.pay_to, scheme=requirement.scheme,
            )  # fmt: skip
            if not entry.payment:
                return entry, None
            found = entry.origin, restored_payment(entry.payment, entry.id)  # another attempt signed meanwhile
        if found is None:
            return None, None
        if found[0] == origin.lower():
            return None, found[1]
        raise _already_paid(key, found[0], origin)

    def _refuse_elsewhere(self, key: str, origin: str) -> None:
        """Raise `AlreadyPaid` when `key` was paid at an origin other than `origin` (a redirect after paying)."""
        found = self._find(key)
        if found is not None and found[0] != origin.lower():
            raise _already_paid(key, found[0], origin)

    def authorize(self, entry: Any, key: str, payment: Payment, header: tuple[str, str]) -> None:
        """Store the signed payment before it is sent (the money rule: durable before it leaves)."""
        if entry is None:
            with self._lock:
                self._memory[key] = (payment.origin.lower(), (payment, header))
                while len(self._memory) > MEMORY_KEYS:
                    self._memory.popitem(last=False)
            return
        signed = payment.signed
        self.ledger.authorize(
            entry.id, payment=stored_payment(payment, header), payer=signed.payer, nonce=signed.nonce,
            valid_before=signed.valid_before, method=signed.method, amount=signed.amount,
        )  # fmt: skip
        payment.ledger_entry = entry.id

    def _find(self, key: str) -> tuple[str, Replay] | None:
        """Where and how `key` was paid: the ledger's entry, or (without a ledger) this process's memory."""
        if self.ledger is None:
            with self._lock:
                return self._memory.get(key)
        entry = self.ledger.lookup(key)
        if entry is None or not entry.payment or entry.state == "released":
            return None  # released: provably never settled (expired unused), so a fresh signature is allowed
        return entry.origin, restored_payment(entry.payment, entry.id)

    def lost(self, payment: Payment, detail: str) -> None:
        """The signed payment went out and no answer came: it may still settle."""
        if payment.ledger_entry is not None:
            self._unknown(payment.ledger_entry, detail)

    def record(self, payment: Payment) -> None:
        """Book what `payment` learned since the last call; raises `ReceiptMismatch` for inline-verified fraud."""
        if not has_news(payment):
            return
        with self._lock:
            news = _take_news(payment)
        if "mismatch" in news:
            self._mismatch(payment, payment.mismatch or "mismatch")
        elif "receipt" in news:
            self._settled(payment)
        elif "failed" in news and payment.ledger_entry is not None:
            self._unknown(payment.ledger_entry, payment.settlement_error or "refused, or settlement failed")

    def _unknown(self, entry_id: str, detail: str) -> None:
        """A refused or failed payment may still settle (the server holds the signature) until it expires."""
        # A re-sent payment whose entry already settled: the refusal of the repeat changes nothing.
        with contextlib.suppress(InvalidTransition):
            self.ledger.mark_unknown(entry_id, detail[:500])

    def _settled(self, payment: Payment) -> None:
        receipt = payment.receipt
        assert receipt is not None  # noqa: S101 - only called once a receipt landed
        if payment.ledger_entry is not None:
            self.ledger.settle(payment.ledger_entry, amount=receipt.amount, tx_hash=receipt.transaction)
        if self.on_receipt is not None:
            self.on_receipt(payment)
        if self.verifier is not None and self.verifier.mode == "inline":
            self._verified(payment, self.verifier.check(payment))
        elif self.verifier is not None:
            self.verifier.submit(lambda: self._verified_quietly(payment))

    def _verified(self, payment: Payment, verification: Any) -> None:
        payment.verification = verification
        if is_fraud(verification):
            self._mismatch(payment, f"{verification.check}: {verification.reason}")
            raise ReceiptMismatch(f"the chain contradicts the receipt from {payment.origin}: "
                                  f"{verification.check}: {verification.reason}", payment, verification)  # fmt: skip
        if verification.verdict == "verified" and payment.ledger_entry is not None:
            self.ledger.mark_verified(payment.ledger_entry)
        if self.on_verified is not None:
            self.on_verified(payment)

    def _verified_quietly(self, payment: Payment) -> None:
        assert self.verifier is not None  # noqa: S101 - submitted only with a verifier
        try:
            self._verified(payment, self.verifier.check(payment))
        except ReceiptMismatch:
            logger.info("verification found fraud by %s", payment.origin)
            if self.on_verified is not None:
                self.on_verified(payment)
        except Exception:  # a background failure must not vanish silently, nor kill the worker
            logger.exception("background verification of a payment to %s failed", payment.origin)

    def _mismatch(self, payment: Payment, detail: str) -> None:
        payment.mismatch = payment.mismatch or detail
        self.trust.mark(payment.origin, detail)
        if payment.ledger_entry is not None:
            self.ledger.mark_mismatch(payment.ledger_entry, detail[:500])
