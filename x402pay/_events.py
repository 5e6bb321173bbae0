"""The decisions that move or hold money, logged: one INFO record each, one function per event.

Every record goes to the ``x402pay.payments`` logger as one line, its facts repeated as attributes of the record
(``extra``) for handlers that keep fields: ``x402pay_event`` (the event's name, below), ``origin``, ``key`` (the
request's ``Idempotency-Key``, cut to `KEY_CHARS`) and, as the event has them, ``option`` (the chosen option's index
in the challenge), ``scheme``, ``amount``, ``asset``, ``network``, ``nonce``, ``valid_before``, ``entry`` (the ledger
entry), ``resent``, ``tx``, ``verdict``, ``reason`` and ``detail``.

    chose      the policy picked an option of a challenge          signed     the wallet signed it
    stored     the ledger stored the signed payment                sent       the paid request went out (or again)
    claimed    the server says it settled (a receipt)              verified   the chain's verdict on that receipt
    unsettled  the ledger keeps the money held: no usable receipt  untrusted  an origin caught lying is marked
    refused    the request is not paid: policy, budget, trust, or the server refused the signed payment
    released   a reservation whose payment never left is given back

A private key or a signature is never among the facts (nothing here reads a payment's payload); what a peer chose (a
transaction hash, a reason) is cut to a bounded length and kept on one line.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, ParamSpec

from x402pay.errors import (
    AlreadyPaid,
    NoAcceptableRequirement,
    OriginUntrusted,
    PaymentRejected,
    Permit2AllowanceRequired,
)

if TYPE_CHECKING:
    from x402pay._payment import Payment
    from x402pay._protocol.models import PaymentRequirements
    from x402pay._receipts import Receipt

logger = logging.getLogger("x402pay.payments")
_P = ParamSpec("_P")

#: How much of an idempotency key a record carries: enough to tell requests apart.
KEY_CHARS: Final = 24
#: A transaction hash or a bytes32 nonce fits whole; longer values (a peer's) are cut.
_VALUE_CHARS: Final = 66
_REASON_CHARS: Final = 160
_LONG_HEX: Final = re.compile(r"[0-9a-fA-F]{65,}")
#: The errors that end a request unpaid by a decision (ours, or the server's about the signed payment).
REFUSALS: Final = (NoAcceptableRequirement, OriginUntrusted, AlreadyPaid, Permit2AllowanceRequired, PaymentRejected)


def _cut(value: object, limit: int = _VALUE_CHARS) -> str | None:
    """`value` on one line, at most `limit` characters, with any hex run longer than a hash shortened: a peer may
    echo a signature (130 hex digits) in what it says."""
    if value is None:
        return None
    text = _LONG_HEX.sub(lambda run: run[0][:10] + "…", " ".join(str(value).split()))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _emit(event: str, template: str, facts: dict[str, Any]) -> None:
    """One record: `template` (``%(name)s`` of `facts`) as its message, `facts` as its attributes."""
    logger.info(f"{event}: {template} (key %(key)s)", facts, extra={"x402pay_event": event, **facts})


def _when_logged(event: Callable[_P, None]) -> Callable[_P, None]:
    """`event`, run only when its record would be written: every paid request passes here, and the facts (cut,
    merged) cost more than the check."""

    @functools.wraps(event)
    def guarded(*args: _P.args, **kwargs: _P.kwargs) -> None:
        if logger.isEnabledFor(logging.INFO):
            event(*args, **kwargs)

    return guarded


def _terms(requirement: PaymentRequirements) -> dict[str, Any]:
    return {"scheme": requirement.scheme, "amount": requirement.amount, "asset": requirement.asset,
            "network": requirement.network}  # fmt: skip


def _of(payment: Payment) -> dict[str, Any]:
    """The facts every record about a signed payment carries (`amount`: the signed maximum)."""
    return {"origin": payment.origin, "key": _cut(payment.idempotency_key, KEY_CHARS), "nonce": payment.signed.nonce,
            "entry": payment.ledger_entry, "amount": payment.signed_amount}  # fmt: skip


@_when_logged
def chose(origin: str, key: str, index: int, requirement: PaymentRequirements) -> None:
    """The policy picked option `index` of `origin`'s challenge."""
    facts = {"origin": origin, "key": _cut(key, KEY_CHARS), "option": index} | _terms(requirement)
    _emit("chose", "option %(option)d of %(origin)s, %(scheme)s %(amount)d of %(asset)s on %(network)s", facts)


@_when_logged
def signed(payment: Payment) -> None:
    """The wallet signed `payment` (for at most its signed amount)."""
    facts = _of(payment) | _terms(payment.requirement) | {"amount": payment.signed_amount,
                                                          "valid_before": payment.signed.valid_before}  # fmt: skip
    _emit("signed", "%(scheme)s up to %(amount)d for %(origin)s, nonce %(nonce)s, valid before %(valid_before)d",
          facts)  # fmt: skip


@_when_logged
def stored(payment: Payment) -> None:
    """The ledger stored the signed `payment` before it leaves the process."""
    _emit("stored", "ledger entry %(entry)s holds the payment for %(origin)s", _of(payment))


@_when_logged
def sent(payment: Payment, *, resent: bool) -> None:
    """The paid request goes out with `payment`: a new signature, or (`resent`) a stored one again."""
    facts = _of(payment) | {"resent": resent}
    what = "the stored payment again" if resent else "the paid request"
    _emit("sent", what + " to %(origin)s", facts)


@_when_logged
def claimed(payment: Payment, receipt: Receipt) -> None:
    """The server claims it settled `receipt.amount` (a claim until the chain shows it)."""
    facts = _of(payment) | {"amount": receipt.amount, "tx": _cut(receipt.transaction)}
    _emit("claimed", "%(origin)s says it settled %(amount)d in %(tx)s", facts)


@_when_logged
def verified(payment: Payment, verification: Any) -> None:
    """The chain's verdict on `payment`'s receipt (``verified``, ``pending``, ``mismatch``, ...)."""
    facts = _of(payment) | {
        "verdict": str(verification.verdict),
        "amount": verification.transferred,
        "tx": _cut(verification.tx_hash),
        "reason": _cut(verification.reason, _REASON_CHARS),
    }
    _emit("verified", "%(verdict)s, the receipt of %(origin)s: %(amount)s moved in %(tx)s", facts)


@_when_logged
def unsettled(payment: Payment, detail: str) -> None:
    """The ledger keeps `payment`'s signed maximum held: refused, failed, pending, or no answer."""
    facts = _of(payment) | {"reason": _cut(detail, _REASON_CHARS)}
    _emit("unsettled", "%(amount)d stays held for %(origin)s: %(reason)s", facts)


@_when_logged
def untrusted(payment: Payment, detail: str) -> None:
    """`payment`'s origin is marked untrusted: nothing is paid to it until a person clears the mark."""
    facts = _of(payment) | {"reason": _cut(detail, _REASON_CHARS)}
    _emit("untrusted", "%(origin)s is not paid again until a person clears it: %(reason)s", facts)


@_when_logged
def refused(origin: str, key: str, error: Exception, requirement: PaymentRequirements | None) -> None:
    """The request to `origin` ends unpaid by a decision: `error` says whose and why."""
    terms = _terms(requirement) if requirement is not None else {}
    facts = {"origin": origin, "key": _cut(key, KEY_CHARS), "reason": type(error).__name__,
             "detail": _cut(error, _REASON_CHARS)} | terms  # fmt: skip
    _emit("refused", "%(reason)s for %(origin)s: %(detail)s", facts)


@_when_logged
def released(origin: str, key: str, entry: str, amount: int, reason: str) -> None:
    """The reservation of ledger `entry` is given back: its payment never left the process."""
    facts = {"origin": origin, "key": _cut(key, KEY_CHARS), "entry": entry, "amount": amount,
             "reason": _cut(reason, _REASON_CHARS)}  # fmt: skip
    _emit("released", "%(amount)d reserved for %(origin)s in entry %(entry)s: %(reason)s", facts)
