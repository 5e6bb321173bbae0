"""The payment program: the order of one paid request, written once, without I/O.

Theory of operation. `PaymentProgram.run` is a generator of effects (`x402pay._effects`); a driver (httpx or
httpx2, sync or async, requests) performs each and sends the result back. For one logical request it:

1. asks the books what they hold for the request's key (`Books.begin`): nothing (`New`), a payment to re-send
   (`Replay`), a reservation still being signed (`InFlight`), or a payment made at another origin
   (`PaidElsewhere`, after a redirect). Only a caller's key costs a ledger read; a key the transport made up is
   answered from memory;
2. re-sends a stored payment as is; or, with pre-payment on and a fresh challenge remembered for the route, pays
   from it on the first send; or sends the request with the ceiling it will sign for;
3. passes any answer but a 402 through untouched (unread, still streaming), and a 402 that is not x402 too;
4. lets the policy choose among the challenge's options, reserves the amount against the budgets (a budget short
   of an upto maximum is announced as the ceiling in one unpaid re-ask, as metered servers size their ask by it),
   checks the Permit2 allowance where the option needs one, signs, and stores the signed payment before it
   leaves. Any failure between the reservation and the send releases the reservation, in that same place;
5. sends the request once more with the payment header, to the same URL only, and concludes from the answer: a
   402 is a refusal (for a pre-payment refused on new terms: one reactive payment, see `x402pay._prepay`); a
   receipt in the headers is recorded and, if asked, verified; a body that may carry one is tapped.

Every answer the program does not hand to the caller is closed before it returns or raises. Each decision that
moves or holds money is logged at INFO where it is taken, here and in the books (`x402pay._events`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

from x402pay import _events, _flow
from x402pay._allowance import GAS_SPONSORING, gas_sponsoring_extension
from x402pay._attempt import Attempt, Call, attempt_of
from x402pay._books import Books, Hold, InFlight, New, PaidElsewhere, Replay, Start
from x402pay._channel_flow import ChannelPayer
from x402pay._channel_terms import CHANNEL_SCHEME
from x402pay._effects import Ahead, Answer, Close, Delivery, Pause, Program, ReadBody, ReadChain, Send, Sign
from x402pay._identifier import payment_identifier
from x402pay._payment import Payment, PaymentStatus
from x402pay._policy import SpendPolicy
from x402pay._prepay import KeptChoices, Route, SharedPrepayments, challenge_after_refusal
from x402pay._presign import Presigned, Presigner
from x402pay._protocol.codec import MAX_BODY_BYTES
from x402pay._protocol.models import PaymentRequirements
from x402pay._repeats import Repeats, unanswered
from x402pay._streams import receipt_tap
from x402pay._wallet import Wallet
from x402pay.errors import (
    BudgetExceeded,
    ChallengeError,
    PaymentError,
    PaymentInFlight,
    PaymentRejected,
    ReceiptMismatch,
    SettlementPending,
    X402PayError,
)

logger = logging.getLogger(__name__)

#: How much of a paid 402's body is read for its reason; more is not needed.
_REASON_BYTES: Final = 64 * 1024
#: How long a request waits for a twin with its key to finish signing before it gives up (`PaymentInFlight`).
TWIN_PATIENCE: Final = 10.0


@dataclass(slots=True)
class Refused:
    """A pre-payment answered with a 402 on new terms: `challenge` is to be paid reactively, once."""

    challenge: _flow.Challenge


class PaymentProgram:
    """Builds the program of each request for one transport's wallet, policy, books and options."""

    def __init__(
        self, *, wallet: Wallet, policy: SpendPolicy, books: Books, prepayments: SharedPrepayments | None,
        repeats: Repeats, clock: Callable[[], float], announce_ceiling: bool, keep_receipt_frames: bool,
        reads_chain: bool, uncovered: _flow.Coverage | None = None, presigner: Presigner | None = None,
    ) -> None:  # fmt: skip
        self.presigner = presigner
        self.uncovered = uncovered  # the books' budgets: an option none covers is not chosen
        self.wallet = wallet
        self.policy = policy
        self.books = books
        self.prepayments = prepayments
        self.repeats = repeats
        self._clock = clock
        self._announce = announce_ceiling
        self._keep_frames = keep_receipt_frames
        self._reads_chain = reads_chain
        self.channels = ChannelPayer(wallet=wallet, policy=policy, books=books, clock=clock, reads_chain=reads_chain,
                                     keep_frames=keep_receipt_frames)  # fmt: skip
        self._kept_choices = KeptChoices(policy)

    def run(self, call: Call) -> Program[Delivery]:
        """The whole of one request: see the module's theory of operation."""
        attempt = attempt_of(call, repeats=self.repeats, presigner=self.presigner, policy=self.policy,
                             announce=self._announce)  # fmt: skip
        try:
            remembered = attempt.fingerprint is not None
            return (yield from self._run_remembered(attempt) if remembered else self._run(attempt))
        except _events.REFUSALS as refusal:  # logged as the request ends: a refused pre-payment may still be paid
            _events.refused(attempt.origin, attempt.key, refusal, attempt.trail.chosen)
            raise

    def _run_remembered(self, attempt: Attempt) -> Program[Delivery]:
        """`_run`, for a request without a key: how it ended is remembered (see `_ended`)."""
        assert attempt.fingerprint is not None  # noqa: S101 - only requests without a key are remembered
        self.repeats.started(attempt.fingerprint, attempt.key)
        try:
            delivery = yield from self._run(attempt)
        except GeneratorExit:
            self.repeats.ended(attempt.fingerprint, attempt.key, answered=False)
            raise
        except BaseException as exc:  # ours are an answer, or a refusal before sending; a pending one may settle
            yield from self._ended(attempt, isinstance(exc, X402PayError) and not isinstance(exc, SettlementPending))
            raise
        yield from self._ended(attempt, not unanswered(delivery.answer.status))
        return delivery

    def _ended(self, attempt: Attempt, answered: bool) -> Program[None]:
        """Remember how a request without a key ended, so that a repeat re-sends its payment or is a new request."""
        assert attempt.fingerprint is not None  # noqa: S101 - only requests without a key are remembered
        self.repeats.ended(attempt.fingerprint, attempt.key, answered=answered)
        sent = attempt.trail.sent
        try:
            if not answered and sent is not None:
                yield from self.books.unanswered(sent, attempt.fingerprint, self.repeats.window)
            elif answered and attempt.trail.resent:
                yield from self.books.answered(attempt.fingerprint)
        except Exception:  # the answer, or the error, matters more than this mark: it is only the books' hint
            logger.info("the ledger could not record how a request to %s ended", attempt.origin, exc_info=True)

    def _run(self, attempt: Attempt) -> Program[Delivery]:
        keys = attempt.keys if self.prepayments else attempt.keys[:1]
        start: Start = New() if attempt.fresh else (yield from self.books.begin(keys, attempt.origin))
        if isinstance(start, Replay):
            outcome = yield from self._resend(attempt, start)
        else:
            outcome = yield from self._first_send(attempt, start)
        if isinstance(outcome, Refused):
            requirement = self._choose(outcome.challenge, attempt)
            outcome = yield from self._pay(attempt, start, outcome.challenge, requirement)
        if not isinstance(outcome, Delivery):  # only a pre-payment is refused with a fallback, and only once
            raise RuntimeError("a reactive payment came back refused with a fallback")
        return outcome

    def record(self, payment: Payment) -> Program[None]:
        """What a tapped stream runs as its receipt arrives: the books take it (and verify it, if asked); a channel's
        book takes a channel stream's."""
        if payment.scheme == CHANNEL_SCHEME:
            return self.channels.streamed(payment)
        return self.books.record(payment)

    def _first_send(self, attempt: Attempt, start: Start) -> Program[Delivery | Refused]:
        try:
            prepayable = yield from self._prepayable(attempt, start)
        except Exception:
            yield from self._presigned(attempt, None)  # released: the request is not paid ahead
            raise
        ready = yield from self._presigned(attempt, prepayable)
        if prepayable is not None:
            try:
                return (yield from self._pay(attempt, start, *prepayable, prepaid=True, ready=ready))
            except BudgetExceeded:  # sized for another ceiling, perhaps: let the server say what it wants now
                self._forget(attempt.route)
        return (yield from self._reactive(attempt, start, reask=True))

    def _reactive(self, attempt: Attempt, start: Start, *, reask: bool) -> Program[Delivery | Refused]:
        """Send unpaid; pay the challenge if one comes."""
        answer = yield Send(attempt.headers, strip=attempt.strip)
        if answer.status != 402:
            return Delivery(answer)
        challenge, body = yield from self._challenge(answer)
        if challenge is None:
            return Delivery(answer, body=body)
        requirement = self._choose(challenge, attempt)
        try:
            return (yield from self._pay(attempt, start, challenge, requirement))
        except BudgetExceeded as refused:
            room = refused.remaining
            if not (reask and requirement.scheme == "upto" and self._announce and 0 < room < requirement.amount):
                raise
        return (yield from self._reactive(attempt.lowered(room), start, reask=False))

    def _challenge(self, answer: Answer) -> Program[tuple[_flow.Challenge | None, bytes | None]]:
        """The 402's challenge (its body read only for v1), the 402 closed once it has one; None if not x402."""
        body = None
        try:
            if _flow.challenge_needs_body(answer.headers):
                body = yield ReadBody(answer, MAX_BODY_BYTES)
                if len(body) > MAX_BODY_BYTES:
                    raise ChallengeError(f"402 body is over the {MAX_BODY_BYTES} byte limit")
            challenge = _flow.decode_challenge(answer.headers, body)
        except ChallengeError:
            yield Close(answer)
            raise
        if challenge is not None:
            yield Close(answer)
        return challenge, body

    def _choose(self, challenge: _flow.Challenge, attempt: Attempt, remembered: bool = False) -> PaymentRequirements:
        """The option the policy takes from `challenge` for `attempt` (`remembered`: a route's remembered challenge,
        chosen from again for each of its pre-payments)."""
        self.books.check_trust(attempt.origin)
        if remembered and self.uncovered is None:
            index, requirement = self._kept_choices.choose(challenge, attempt.origin, attempt.ceiling)
        else:
            index, requirement = _flow.choose(challenge, policy=self.policy, origin=attempt.origin,
                                              ceiling=attempt.ceiling, uncovered=self.uncovered)  # fmt: skip
        attempt.trail.chosen = requirement
        _events.chose(attempt.origin, attempt.key, index, requirement)
        return requirement

    def _pay(
        self, attempt: Attempt, start: Start, challenge: _flow.Challenge, requirement: PaymentRequirements,
        prepaid: bool = False, ready: Presigned | None = None,
    ) -> Program[Delivery | Refused]:  # fmt: skip
        key = attempt.keys[1] if prepaid else attempt.key
        if isinstance(start, PaidElsewhere):
            raise start.refusal(attempt.origin)
        if attempt.refund is not None:
            return (yield from self.channels.refund(attempt, challenge, requirement))
        if requirement.scheme == CHANNEL_SCHEME:  # its own program: a lease, a voucher, perhaps a deposit
            return (yield from self._pay_channel(attempt, challenge, requirement, prepaid))
        if ready is not None and self.presigner is not None:  # signed ahead for exactly this: store it, send it
            payment, header = yield from self.presigner.authorize(ready, attempt.key, attempt.headers)
        else:
            held = yield from self._reserve(key, attempt.origin, requirement, attempt.repeat_of)
            if isinstance(held, Replay):  # another attempt with this key signed meanwhile: re-send, never re-sign
                return (yield from self._resend(attempt, held))
            payment, header = yield from self._sign(held, challenge, requirement, attempt)
        payment.prepaid = prepaid
        if prepaid and self.presigner is not None:  # the next request's payment, signed while this one is away
            yield Ahead(self.presigner.ahead(attempt.route, challenge, requirement))
        outcome = yield from self._send_paid(attempt, payment, header, fallback=prepaid)
        if self.prepayments is not None and payment.status is not PaymentStatus.FAILED:
            yield from self.prepayments.accepted(attempt.route, challenge)
        return outcome

    def _pay_channel(
        self, attempt: Attempt, challenge: _flow.Challenge, requirement: PaymentRequirements, prepaid: bool
    ) -> Program[Delivery | Refused]:
        """Pay through the requirement's channel; a route whose voucher was taken is remembered, so that with
        pre-payment its next request sends a voucher at once (one round trip)."""
        outcome = yield from self.channels.pay(attempt, challenge, requirement, prepaid=prepaid)
        if isinstance(outcome, _flow.Challenge):  # the remembered terms are no longer the route's
            yield from self._prepayment_refused(attempt.origin)
            return Refused(outcome)
        if self.prepayments is not None and outcome.payment is not None and outcome.answer.status < 400:
            yield from self.prepayments.accepted(attempt.route, challenge)
        return outcome

    def _reserve(
        self, key: str, origin: str, requirement: PaymentRequirements, fingerprint: str | None
    ) -> Program[Hold | Replay]:
        """Reserve; while a twin with the same key is signing, wait for it (and then re-send its payment), for at
        most `TWIN_PATIENCE` seconds."""
        waited, step = 0.0, 0.01
        while True:
            try:
                return (yield from self.books.reserve(key, origin, requirement, fingerprint))
            except PaymentInFlight:
                if waited >= TWIN_PATIENCE:
                    raise
            step = min(step * 2, 0.5, TWIN_PATIENCE - waited)
            yield Pause(step)
            waited += step

    def _resend(self, attempt: Attempt, replay: Replay) -> Program[Delivery | Refused]:
        """Send a stored payment again, with the headers it was first sent with, byte for byte."""
        again = attempt.resent(replay.headers)
        attempt.trail.resent = True
        return (yield from self._send_paid(again, replay.payment, replay.header, fallback=replay.prepaid, resent=True))

    def _sign(
        self, held: Hold, challenge: _flow.Challenge, requirement: PaymentRequirements, attempt: Attempt
    ) -> Program[tuple[Payment, tuple[str, str]]]:
        """Check the allowance, sign, and store the signed payment; on any failure, release the reservation."""
        try:
            checks_allowance = self._reads_chain and _flow.uses_permit2(requirement)
            extensions = (yield from self._approval(challenge, requirement)) if checks_allowance else {}
            extensions |= payment_identifier(challenge.required.extensions, held.key)
            now = int(self._clock())
            signing = partial(_flow.sign, challenge, requirement, wallet=self.wallet, policy=self.policy,
                              origin=attempt.origin, now=now, extensions=extensions)  # fmt: skip
            payment, header = yield Sign(signing)
            payment.idempotency_key = attempt.key
            _events.signed(payment)
            yield from self.books.authorize(held, payment, header, attempt.headers)
        except GeneratorExit:  # the driver is gone: nothing can be yielded any more
            self.books.let_go(held)
            raise
        except BaseException as exc:
            yield from self.books.release(held, f"never sent: {type(exc).__name__}")
            raise
        return payment, header

    def _approval(self, challenge: _flow.Challenge, requirement: PaymentRequirements) -> Program[dict[str, Any]]:
        """Check the Permit2 allowance on chain: extensions to add to the payment, or a refusal."""
        allowance = yield ReadChain("allowance", requirement.asset)
        if not _flow.approval_needed(challenge, requirement, allowance):
            return {}
        nonce = yield ReadChain("nonce", requirement.asset)
        deadline = int(self._clock()) + min(requirement.max_timeout_seconds, self.policy.max_lifetime)
        offered = challenge.required.extensions or {}
        sponsoring = partial(gas_sponsoring_extension, self.wallet, requirement, offered, nonce=nonce,
                             deadline=deadline)  # fmt: skip
        return {GAS_SPONSORING: (yield Sign(sponsoring))}

    def _send_paid(
        self, attempt: Attempt, payment: Payment, header: tuple[str, str], *, fallback: bool, resent: bool = False
    ) -> Program[Delivery | Refused]:
        """Send the paid request and conclude; `fallback`: a refusal on new terms is returned, not raised; `resent`:
        `payment` is a stored one, sent again."""
        attempt.trail.sent = payment
        _events.sent(payment, resent=resent)
        try:
            answer = yield Send(attempt.headers, header)
        except GeneratorExit:
            raise
        except BaseException as exc:
            yield from self.books.lost(payment, f"no answer: {type(exc).__name__}")
            raise
        try:
            return (yield from self._conclude(payment, answer, fallback=fallback))
        except GeneratorExit:
            raise
        except BaseException:
            if answer.status != 402:  # a 402 was closed as soon as it was read
                yield Close(answer)
            raise

    def _conclude(self, payment: Payment, answer: Answer, *, fallback: bool) -> Program[Delivery | Refused]:
        body = None
        if answer.status == 402:
            if _flow.challenge_needs_body(answer.headers):
                body = (yield ReadBody(answer, _REASON_BYTES))[:_REASON_BYTES]
            yield Close(answer)
        try:
            _flow.conclude(payment, answer.status, answer.headers, body)
        except PaymentRejected as rejected:
            yield from self.books.record(payment)
            if not fallback:
                raise
            yield from self._prepayment_refused(payment.origin)
            return Refused(challenge_after_refusal(rejected, payment, answer.headers, body))
        except (ReceiptMismatch, SettlementPending):
            yield from self.books.record(payment)
            raise
        yield from self.books.record(payment)
        return Delivery(answer, payment, tap=receipt_tap(payment, answer.headers, keep_frames=self._keep_frames))

    def _prepayment_refused(self, origin: str) -> Program[None]:
        """`origin` answered a pre-payment with a 402: it is not pre-paid (nor signed ahead for) again for a while,
        so that refusing cannot collect signatures."""
        if self.prepayments is not None:
            yield from self.prepayments.refused(origin)
        if self.presigner is not None:
            yield from self.presigner.dropped(origin)

    def _prepayable(
        self, attempt: Attempt, start: Start
    ) -> Program[tuple[_flow.Challenge, PaymentRequirements] | None]:
        """The remembered challenge of the request's route and the option the policy takes from it now, if any."""
        if self.prepayments is None or isinstance(start, Replay | InFlight):
            return None
        challenge = yield from self.prepayments.challenge_for(attempt.route)
        if challenge is None:
            return None
        if isinstance(start, PaidElsewhere):  # the route is paid for: it would ask to be paid again
            raise start.refusal(attempt.origin)
        try:
            return challenge, self._choose(challenge, attempt, remembered=True)
        except PaymentError:  # the policy, the ceiling or the trust marks changed: pay reactively, if at all
            self._forget(attempt.route)
            return None

    def _presigned(
        self, attempt: Attempt, prepayable: tuple[_flow.Challenge, PaymentRequirements] | None
    ) -> Program[Presigned | None]:
        """The payment signed ahead for the request, if the policy's choice for it now is what was signed (else it
        is released)."""
        if self.presigner is None or attempt.presigned is None:
            return None
        requirement = prepayable[1] if prepayable is not None else None
        return (yield from self.presigner.usable(attempt.presigned, requirement))

    def _forget(self, route: Route) -> None:
        if self.prepayments is not None:
            self.prepayments.forget(route)
