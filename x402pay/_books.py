"""The books of a paying client, as programs: what the ledger, the trust marks and verification are asked, when.

Each method here is a small program (see `x402pay._effects`): it yields `Book` effects for the ledger and `Verify`
or `Spawn` for the chain, and holds no connection. The payment program (`x402pay._program`) runs them at fixed
points: `begin` before the first send, `reserve` after the policy chose, `authorize` before the signed payment
leaves the process, `release` when it never left, `lost` when no answer came, and `record` whenever the Payment
learned something (a receipt, a mismatch, a refusal).

A logical request is its ``Idempotency-Key``: the caller's, or one the transport made up (`new_key`). A key the
transport made up can only be in the books if this process booked it, so its questions are answered from memory;
a caller's key is looked up in the ledger, once, in `begin`. Without a ledger, memory is the only book.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from x402pay import _events
from x402pay._effects import Book, Program, Spawn, Verify
from x402pay._flow import is_pending
from x402pay._payment import Payment, PaymentStatus
from x402pay._protocol.models import PaymentRequirements
from x402pay._schemes.exact import SignedPayment
from x402pay._trust import TrustStore
from x402pay._verifier import is_fraud
from x402pay.errors import AlreadyPaid, InvalidTransition, OriginUntrusted, PaymentInFlight, ReceiptMismatch

logger = logging.getLogger(__name__)

IDEMPOTENCY_KEY: Final = "Idempotency-Key"
#: Added to a logical request's key for its pre-payment (the reactive payment keeps the key itself).
PREPAY_SUFFIX: Final = "#prepay"
#: How many paid logical requests this process remembers (to re-send, never to re-sign).
MEMORY_KEYS: Final = 4096
#: Keys the transport makes up start with this, and then carry a random part no caller can guess.
_OUR_KEY_PREFIX: Final = "x402pay-"
Callback = Callable[[Payment], None]


@dataclass(slots=True)
class Replay:
    """The logical request was paid here already: re-send this payment (`prepaid`: booked as its pre-payment) with
    the `headers` it was first sent with (the ceiling among them: a server may rebuild its terms from it)."""

    payment: Payment
    header: tuple[str, str]
    prepaid: bool = False
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class New:
    """Nothing is booked for the logical request: it may be paid."""


@dataclass(slots=True)
class InFlight:
    """Another request with this key holds a reservation and has not stored a signed payment (yet)."""

    entry: Any


@dataclass(slots=True)
class PaidElsewhere:
    """The logical request was paid at `origin` (a redirect led here): it must not be paid again."""

    key: str
    origin: str

    def refusal(self, asking: str) -> AlreadyPaid:
        """The error for `asking` wanting to be paid too."""
        return AlreadyPaid(
            f"this request (Idempotency-Key {self.key[:80]!r}) was already paid at {self.origin}; {asking} asks "
            "to be paid again for it: refused"
        )


Start = New | Replay | InFlight | PaidElsewhere


@dataclass(slots=True)
class Hold:
    """A reservation made for a payment about to be signed (`entry_id` None without a ledger) of `amount` to
    `origin`."""

    key: str
    entry_id: str | None
    origin: str
    amount: int


def new_key() -> str:
    """A fresh idempotency key, marked as made up by the transport."""
    return _OUR_KEY_PREFIX + secrets.token_hex(16)


def is_our_key(key: str) -> bool:
    """Whether `key` was made up by a transport (so only this process's memory can hold it)."""
    return key.startswith(_OUR_KEY_PREFIX) and len(key) == len(_OUR_KEY_PREFIX) + 32


def stored_payment(payment: Payment, header: tuple[str, str], sent: Mapping[str, str]) -> dict[str, Any]:
    """What the ledger keeps to re-send `payment` byte for byte (with the headers it was `sent` with) and to rebuild
    its record."""
    signed = payment.signed
    return {
        "header": list(header), "sentHeaders": dict(sent), "origin": payment.origin,
        "x402Version": payment.x402_version,
        "requirement": signed.requirement.raw, "payload": signed.payload, "payer": signed.payer,
        "amount": signed.amount, "nonce": signed.nonce, "validAfter": signed.valid_after,
        "validBefore": signed.valid_before, "method": signed.method, "prepaid": payment.prepaid,
    }  # fmt: skip


def restored(stored: Mapping[str, Any], entry_id: str, key: str) -> Replay:
    """The stored payment (see `stored_payment`) of ledger entry `entry_id`, booked under `key`, to re-send."""
    payment, header = restored_payment(stored, entry_id)
    payment.idempotency_key = key.removesuffix(PREPAY_SUFFIX)
    prepaid = key.endswith(PREPAY_SUFFIX)
    sent = stored.get("sentHeaders")
    headers = {str(name): str(value) for name, value in sent.items()} if isinstance(sent, dict) else {}
    return Replay(payment, header, prepaid, headers)


def restored_payment(stored: Mapping[str, Any], entry_id: str) -> tuple[Payment, tuple[str, str]]:
    """The Payment and header of a stored payment (see `stored_payment`)."""
    signed = SignedPayment(
        requirement=PaymentRequirements.model_validate(stored["requirement"]),
        payload=stored["payload"], payer=stored["payer"], amount=int(stored["amount"]), nonce=stored["nonce"],
        valid_after=int(stored["validAfter"]), valid_before=int(stored["validBefore"]), method=stored["method"],
    )  # fmt: skip
    payment = Payment(origin=stored["origin"], x402_version=int(stored["x402Version"]), signed=signed)
    payment.ledger_entry = entry_id
    payment.prepaid = bool(stored.get("prepaid", False))
    name, value = stored["header"]
    return payment, (str(name), str(value))


def _facts(payment: Payment) -> set[str]:
    facts = {
        "mismatch": payment.mismatch is not None,
        "receipt": payment.receipt is not None,
        "failed": payment.status is PaymentStatus.FAILED,
        "pending": is_pending(payment.settlement),
    }
    return {fact for fact, true in facts.items() if true}


def has_news(payment: Payment) -> bool:
    """Whether `payment` learned something the books have not recorded yet (cheap; no lock)."""
    return not _facts(payment) <= payment.booked


class Books:
    """The bookkeeping programs of one transport; `ledger` says whether it has a ledger to ask."""

    def __init__(
        self, *, ledger: bool, trust: TrustStore, verify: str, on_receipt: Callback | None,
        on_verified: Callback | None,
    ) -> None:  # fmt: skip
        self.ledger = ledger
        self.trust = trust
        self.verify = verify
        self.on_receipt = on_receipt
        self.on_verified = on_verified
        self._lock = threading.Lock()
        self._memory: OrderedDict[str, tuple[str, Replay]] = OrderedDict()
        self._holding: set[str] = set()  # without a ledger: the keys reserved here and not yet signed

    def check_trust(self, origin: str) -> None:
        """Raise `OriginUntrusted` for an origin marked as having lied; nothing is signed for it."""
        reason = self.trust.reason(origin)
        if reason is not None:
            raise OriginUntrusted(f"{origin} is untrusted ({reason}); clear it with `x402pay trust reset {origin}`")

    def begin(self, keys: Sequence[str], origin: str) -> Program[Start]:
        """What the books hold for a logical request's `keys` (its own key first, then its pre-payment's): one
        look-up, in memory for a key the transport made up, else one ledger read."""
        if not self._in_memory(keys[0]):
            entries: dict[str, Any] = yield Book("find", (tuple(keys),))
            return _start_from_entries(keys, entries, origin)
        for key in keys:
            found = self._remembered(key)
            if found is not None:
                return _start(key, found[0], origin, found[1])
        return New()

    def reserve(
        self, key: str, origin: str, requirement: PaymentRequirements, fingerprint: str | None = None
    ) -> Program[Hold | Replay]:
        """Hold the requirement's amount against the budgets (`BudgetExceeded`, `PaymentInFlight`), or the payment
        another attempt with this key signed meanwhile (or, with a ledger, the unanswered request this one repeats,
        by its `fingerprint`), to re-send."""
        found = self._remembered(key)
        if found is None and self.ledger:
            repeat = {"fingerprint": fingerprint} if fingerprint is not None else {}
            entry = yield Book("reserve", (key,), {
                "origin": origin, "asset": requirement.asset, "network": requirement.network,
                "amount": requirement.amount, "pay_to": requirement.pay_to, "scheme": requirement.scheme, **repeat,
            })  # fmt: skip
            if not entry.payment:
                return Hold(key, entry.id, origin, requirement.amount)
            found = (entry.origin, restored(entry.payment, entry.id, entry.key))
        if found is None:
            found = self._hold_here(key)
        if found is None:
            return Hold(key, None, origin, requirement.amount)
        started = _start(key, found[0], origin, found[1])
        if isinstance(started, PaidElsewhere):
            raise started.refusal(origin)
        assert isinstance(started, Replay)  # noqa: S101 - _start gives a replay for the same origin
        return started

    def release(self, hold: Hold, reason: str) -> Program[None]:
        """Give back a reservation whose payment never left the process."""
        self.let_go(hold)
        if hold.entry_id is not None:
            with contextlib.suppress(InvalidTransition):  # authorized after all: the money stays held
                yield Book("release", (hold.entry_id, reason[:500]))
                _events.released(hold.origin, hold.key, hold.entry_id, hold.amount, reason)

    def authorize(
        self, hold: Hold, payment: Payment, header: tuple[str, str], sent: Mapping[str, str]
    ) -> Program[None]:
        """Store the signed payment, and the headers it goes with, before it is sent (durable before it leaves)."""
        if hold.entry_id is not None:
            signed = payment.signed
            yield Book("authorize", (hold.entry_id,), {
                "payment": stored_payment(payment, header, sent), "payer": signed.payer, "nonce": signed.nonce,
                "valid_before": signed.valid_before, "method": signed.method, "amount": signed.amount,
            })  # fmt: skip
            payment.ledger_entry = hold.entry_id
            _events.stored(payment)
        if not self._in_memory(hold.key):
            return
        with self._lock:
            self._memory[hold.key] = (payment.origin.lower(), Replay(payment, header, payment.prepaid, dict(sent)))
            self._holding.discard(hold.key)
            while len(self._memory) > MEMORY_KEYS:
                self._memory.popitem(last=False)

    def let_go(self, hold: Hold) -> None:
        """Drop this process's in-flight mark of `hold` (a twin waiting on it may then reserve)."""
        with self._lock:
            self._holding.discard(hold.key)

    def unanswered(self, payment: Payment, fingerprint: str, window: float) -> Program[None]:
        """With a ledger: `payment`, of a request without a key, got no answer its caller could use; a repeat of the
        request from any process re-sends it for `window` seconds."""
        if self.ledger and payment.ledger_entry is not None:
            yield Book("unanswered", (fingerprint, payment.ledger_entry), {"window": window})

    def answered(self, fingerprint: str) -> Program[None]:
        """With a ledger: a repeat of the request `fingerprint` got its answer; later ones like it are new."""
        if self.ledger:
            yield Book("answered", (fingerprint,))

    def routes(self, max_age: float) -> Program[list[Any]]:
        """With a ledger: the routes it remembers for pre-payment (`x402pay.ledger.RememberedRoute`), else none."""
        if not self.ledger:
            return []
        routes: list[Any] = yield Book("routes", (), {"max_age": max_age})
        return routes

    def remember_route(self, route: tuple[str, str, str], challenge: dict[str, Any], max_age: float) -> Program[None]:
        """With a ledger: keep the challenge a route's server accepted, for every process of the ledger."""
        if self.ledger:
            yield Book("remember_route", (*route, challenge), {"max_age": max_age})

    def forget_routes(self, origin: str, max_age: float) -> Program[None]:
        """With a ledger: forget the routes of an origin that refused a pre-payment."""
        if self.ledger:
            yield Book("forget_routes", (origin,), {"max_age": max_age})

    def lost(self, payment: Payment, detail: str) -> Program[None]:
        """The signed payment went out and no answer came: it may still settle."""
        yield from self._unknown(payment, detail)

    def record(self, payment: Payment) -> Program[None]:
        """Book what `payment` learned since the last call; raises `ReceiptMismatch` for inline-verified fraud."""
        if not has_news(payment):
            return
        with self._lock:
            news = _facts(payment) - payment.booked
            payment.booked |= news
        if "mismatch" in news:
            yield from self._mismatch(payment, payment.mismatch or "mismatch")
        elif "receipt" in news:
            yield from self._settled(payment)
        elif "failed" in news:
            yield from self._unknown(payment, payment.settlement_error or "refused, or settlement failed")
        elif "pending" in news:
            transaction = payment.settlement.transaction if payment.settlement is not None else None
            yield from self._unknown(payment, f"settlement pending in {transaction or 'an unnamed transaction'}")

    def escrowed(self, deposit: Payment, *, verified: bool) -> Program[None]:
        """A channel deposit landed: its reservation stays held as escrow, claimed (and settled when the chain was
        read to check it) at the deposited amount."""
        receipt = deposit.receipt
        if deposit.ledger_entry is None or receipt is None:
            return
        yield Book("claim", (deposit.ledger_entry,), {"amount": receipt.amount, "tx_hash": receipt.transaction})
        if verified:
            yield Book("settle", (deposit.ledger_entry,), {"amount": receipt.amount, "tx_hash": receipt.transaction})

    def caught(self, payment: Payment, detail: str) -> Program[None]:
        """A server contradicted what we know of a payment (a channel's report): record it, stop paying it."""
        yield from self._mismatch(payment, detail)

    def _in_memory(self, key: str) -> bool:
        """Whether `key` is booked in this process's memory (no ledger, or a key the transport made up)."""
        return not self.ledger or is_our_key(key)

    def _remembered(self, key: str) -> tuple[str, Replay] | None:
        if not self._in_memory(key):
            return None
        with self._lock:
            return self._memory.get(key)

    def _hold_here(self, key: str) -> tuple[str, Replay] | None:
        """Without a ledger: the payment a twin stored meanwhile, else mark `key` in flight here (`PaymentInFlight`
        while a twin holds it)."""
        with self._lock:
            found = self._memory.get(key)
            if found is None:
                if key in self._holding:
                    raise PaymentInFlight(None, key)
                self._holding.add(key)
            return found

    def _unknown(self, payment: Payment, detail: str) -> Program[None]:
        """A refused or failed payment may still settle (the server holds the signature) until it expires."""
        if payment.ledger_entry is not None:
            # A re-sent payment whose entry already settled: the refusal of the repeat changes nothing.
            with contextlib.suppress(InvalidTransition):
                yield Book("mark_unknown", (payment.ledger_entry, detail[:500]))
                _events.unsettled(payment, detail)

    def _settled(self, payment: Payment) -> Program[None]:
        receipt = payment.receipt
        assert receipt is not None  # noqa: S101 - only called once a receipt landed
        _events.claimed(payment, receipt)
        if payment.ledger_entry is not None:  # a claim: the money stays held until the chain shows what moved
            yield Book("claim", (payment.ledger_entry,), {"amount": receipt.amount, "tx_hash": receipt.transaction})
        if self.on_receipt is not None:
            self.on_receipt(payment)
        if self.verify == "inline":
            yield from self._verified(payment, (yield Verify(payment)))
        elif self.verify == "background":
            yield Spawn(self._verify_later(payment))

    def _verified(self, payment: Payment, verification: Any) -> Program[None]:
        payment.verification = verification
        _events.verified(payment, verification)
        if is_fraud(verification):
            yield from self._mismatch(payment, f"{verification.check}: {verification.reason}")
            raise ReceiptMismatch(f"the chain contradicts the receipt from {payment.origin}: "
                                  f"{verification.check}: {verification.reason}", payment, verification)  # fmt: skip
        if verification.verdict == "verified" and payment.ledger_entry is not None:
            moved = verification.transferred if verification.transferred is not None else payment.settled_amount
            yield Book("settle", (payment.ledger_entry,), {"amount": moved, "tx_hash": verification.tx_hash})
        if self.on_verified is not None:
            self.on_verified(payment)

    def _verify_later(self, payment: Payment) -> Program[None]:
        try:
            yield from self._verified(payment, (yield Verify(payment)))
        except ReceiptMismatch:  # logged as it was found (`_events.verified`, `_events.untrusted`)
            if self.on_verified is not None:
                self.on_verified(payment)
        except Exception:  # a background failure must not vanish silently, nor kill the worker
            logger.info("background verification of a payment to %s failed", payment.origin, exc_info=True)

    def _mismatch(self, payment: Payment, detail: str) -> Program[None]:
        payment.mismatch = payment.mismatch or detail
        self.trust.mark(payment.origin, detail)
        _events.untrusted(payment, detail)
        if payment.ledger_entry is not None:
            yield Book("mark_mismatch", (payment.ledger_entry, detail[:500]))


def _start(key: str, paid_at: str, origin: str, replay: Replay) -> Replay | PaidElsewhere:
    return replay if paid_at == origin.lower() else PaidElsewhere(key, paid_at)


def _start_from_entries(keys: Sequence[str], entries: Mapping[str, Any], origin: str) -> Start:
    """The start of a logical request from its ledger entries (the live one of each key, or its last released)."""
    for key in keys:
        entry = entries.get(key)
        if entry is None or str(entry.state) == "released":
            continue  # released: provably never settled, so a fresh signature is allowed
        if not entry.payment:
            return InFlight(entry)
        return _start(key, entry.origin, origin, restored(entry.payment, entry.id, key))
    return New()
