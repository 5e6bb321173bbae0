"""The ``batch-settlement`` part of the payment program: one request paid through a channel, without I/O.

Theory of operation. For a channel option the policy chose, `ChannelPayer.pay`:

1. derives the channel (`x402pay._channel_terms`) and takes its lease in the channel book, waiting while another
   request (of any thread, process or machine sharing the ledger) holds it: requests on one channel queue, so no
   two vouchers are ever signed from the same cumulative charge;
2. on a channel it has no record of, reads ``channels(id)`` from the chain (with an ``rpc_url``): what was claimed
   is charged, what is deposited is the balance;
3. signs the voucher for ``charged + amount`` and, when that is above the balance, a deposit sized under the
   policy's ``max_deposit``. A deposit is money leaving the wallet: it is reserved against the budgets like any
   payment, and stored before it leaves. The voucher's ceiling is written to the channel book before it leaves;
4. sends the request once. A corrective 402 (the server's record differs) is believed only as far as it is proven
   (`x402pay._channel_checks.recover`) and answered once more; any other 402 is a refusal. A paid answer's report
   is checked (`problem_with`), and a deposit is checked on chain. A server that lies is marked untrusted, charged
   (in our books) the whole voucher it holds, and the escrow it has not claimed starts to come back
   (``initiateWithdraw``, with an ``rpc_url``; `x402pay._channel_lies`);
5. books a streamed answer, whose report comes in-band at its end, at the voucher's most until then: its receipt,
   read by the caller's stream, books what it charged (`ChannelPayer.streamed`).
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from x402pay import _events, _flow
from x402pay._attempt import Attempt
from x402pay._books import Books, Hold, Replay
from x402pay._channel_chain import OnChain
from x402pay._channel_checks import Expected, Recovered, only_just_sent, problem_with, recover, served_before
from x402pay._channel_lease import Channel, leased
from x402pay._channel_lies import caught, lied_in_stream
from x402pay._channel_messages import (
    Report,
    corrective,
    deposit_payment,
    deposit_requirement,
    new_terms,
    payment_of,
    refund_amount,
    refusal_reason,
    report_of,
    transaction_of,
)
from x402pay._channel_sign import DepositTerms, SignedChannelPayment, sign_refund, sign_request
from x402pay._channel_terms import CHANNEL_SCHEME, channel_terms, deposit_size
from x402pay._effects import Answer, ChannelChain, ChannelOp, Close, Delivery, Program, Send, Sign
from x402pay._payment import Payment, PaymentStatus
from x402pay._policy import SpendPolicy
from x402pay._protocol.models import PaymentRequirements
from x402pay._receipts import Receipt
from x402pay._schemes.channel import channel_id
from x402pay._streams import ReceiptTap
from x402pay._wallet import Wallet
from x402pay.errors import AlreadyPaid, NoAcceptableRequirement, PaymentInFlight, PaymentRejected
from x402pay.ledger._channels import ChannelRecord
from x402pay.ledger._holder import new_holder

logger = logging.getLogger(__name__)


class ChannelPayer:
    """Pays ``batch-settlement`` options for one transport (see the module's theory of operation)."""

    def __init__(
        self, *, wallet: Wallet, policy: SpendPolicy, books: Books, clock: Any, reads_chain: bool, keep_frames: bool
    ) -> None:
        self.wallet = wallet
        self.keep_frames = keep_frames
        self.policy = policy
        self.books = books
        self._clock = clock
        self._reads_chain = reads_chain

    def pay(
        self, attempt: Attempt, challenge: _flow.Challenge, requirement: PaymentRequirements, *, prepaid: bool = False
    ) -> Program[Delivery | _flow.Challenge]:
        """Pay `requirement` through its channel, under the channel's lease. `prepaid`: from a route's remembered
        challenge, on the first send; a 402 on new terms then comes back as its challenge, to be paid reactively."""
        channel = self._channel(requirement)
        body = partial(self._pay_leased, attempt, challenge, requirement, channel, retry=True, prepaid=prepaid)
        return (yield from leased(channel, attempt.origin, requirement, body, timeout=attempt.timeout))

    def refund(
        self, attempt: Attempt, challenge: _flow.Challenge, requirement: PaymentRequirements
    ) -> Program[Delivery]:
        """Ask for the channel's unspent escrow back (all of it, or the amount in `attempt.refund`)."""
        if requirement.scheme != CHANNEL_SCHEME:
            raise NoAcceptableRequirement(f"{attempt.origin} offers no channel to refund (only {requirement.scheme})")
        amount = refund_amount(str(attempt.refund))
        channel = self._channel(requirement)
        body = partial(self._refund_leased, attempt, challenge, requirement, channel, amount)
        return (yield from leased(channel, attempt.origin, requirement, body, timeout=attempt.timeout))

    def _channel(self, requirement: PaymentRequirements) -> Channel:
        terms = channel_terms(requirement)
        config = terms.config(self.wallet.address)
        chain_id = requirement.chain_id
        return Channel(terms, config, channel_id(config, chain_id), chain_id, new_holder("x402pay"))

    def _refund_leased(
        self, attempt: Attempt, challenge: _flow.Challenge, requirement: PaymentRequirements, channel: Channel,
        amount: int | None, record: ChannelRecord,
    ) -> Program[Delivery]:  # fmt: skip
        if record.updated_at == 0 and self._reads_chain:
            record = yield from self._adopt_chain(channel, record)
        signing = partial(
            sign_refund, self.wallet, channel.config, channel.id, channel.chain_id, record.charged, amount
        )
        signed: SignedChannelPayment = yield Sign(signing)
        payment, header = payment_of(challenge, requirement, attempt.origin, signed, self.wallet.address, amount=0)
        answer = yield from self._send(attempt, header, None)
        if answer.status == 402:
            yield Close(answer)
            raise PaymentRejected(f"{attempt.origin} refused to refund the channel")
        report = report_of(answer.headers)
        if self._reads_chain:  # the chain says what came back; the budgets stop holding it
            chain: OnChain = yield ChannelChain("read", (channel.id, channel.config.withdraw_delay))
            back = max(record.chain_balance - chain.balance, 0)
            changes = {
                "refunded": record.refunded + back, "chain_balance": chain.balance,
                "chain_claimed": chain.total_claimed, "charged": max(record.charged, chain.total_claimed),
            }  # fmt: skip
            record = yield ChannelOp("update", (channel.key, channel.holder), changes)
            yield ChannelOp("return_escrow", (record, back))
        payment.receipt = Receipt(amount=0, source="PAYMENT-RESPONSE", network=requirement.network,
                                  payer=self.wallet.address, transaction=transaction_of(report))  # fmt: skip
        payment.status = PaymentStatus.SETTLED
        return Delivery(answer, payment)

    def _pay_leased(
        self, attempt: Attempt, challenge: _flow.Challenge, requirement: PaymentRequirements, channel: Channel,
        record: ChannelRecord, *, retry: bool, prepaid: bool = False,
    ) -> Program[Delivery | _flow.Challenge]:  # fmt: skip
        if record.state == "closed" and self._reads_chain:  # emptied before: a deposit opens it again
            record = yield from self._adopt_chain(channel, record, keep_charged=True, reopen=True)
        if record.state != "open":
            raise PaymentRejected(f"channel {channel.key[:18]}... is {record.state}: nothing more is signed on it")
        if record.updated_at == 0 and self._reads_chain:  # never seen here: start from the chain
            record = yield from self._adopt_chain(channel, record)
        ceiling = record.charged + requirement.amount
        if ceiling > record.chain_balance and self._reads_chain:  # a deposit whose answer was lost may have landed
            record = yield from self._adopt_chain(channel, record, keep_charged=True)
        due = self._deposit_due(requirement, channel, ceiling - record.chain_balance)
        key = attempt.key + ("#deposit" if retry else "#deposit-again")  # a corrective 402 refused the first
        hold = None if due is None else (yield from self._hold_deposit(key, attempt.origin, requirement, due))
        try:
            signing = partial(sign_request, self.wallet, channel.terms, channel.config, channel.id,
                              channel.chain_id, ceiling, due)  # fmt: skip
            signed: SignedChannelPayment = yield Sign(signing)
            payment, header = payment_of(challenge, requirement, attempt.origin, signed, self.wallet.address)
            payment.idempotency_key = attempt.key
            payment.prepaid = prepaid
            _events.signed(payment)
            deposit = deposit_payment(payment, signed, requirement) if due is not None else None
            signed_now = {"signed_max": ceiling, "signed_key": attempt.key} if ceiling >= record.signed_max else {}
            yield ChannelOp("update", (channel.key, channel.holder), signed_now)
            if hold is not None and deposit is not None:
                yield from self.books.authorize(hold, deposit, header, attempt.headers)
        except GeneratorExit:
            if hold is not None:
                self.books.let_go(hold)
            raise
        except BaseException as exc:
            if hold is not None:
                yield from self.books.release(hold, f"never sent: {type(exc).__name__}")
            raise
        _events.sent(payment, resent=False)
        answer = yield from self._send(attempt, header, deposit)
        if answer.status == 402:
            return (yield from self._refused(attempt, challenge, requirement, channel, record, answer, deposit, retry,
                                             prepaid))  # fmt: skip
        try:
            return (yield from self._conclude(attempt, requirement, channel, record, payment, deposit, answer))
        except BaseException:
            yield Close(answer)
            raise

    def _deposit_due(self, requirement: PaymentRequirements, channel: Channel, short: int) -> DepositTerms | None:
        if short <= 0:
            return None
        hint = channel.terms.extra.min_deposit
        amount = deposit_size(needed=short, amount=requirement.amount, hint=hint, cap=self.policy.deposit_cap)
        lifetime = min(requirement.max_timeout_seconds, self.policy.max_lifetime)
        return DepositTerms(amount, int(self._clock()) + lifetime)

    def _hold_deposit(
        self, key: str, origin: str, requirement: PaymentRequirements, due: DepositTerms
    ) -> Program[Hold]:
        """Reserve the deposit against the budgets, as the payment it is (money leaving the wallet)."""
        escrow = deposit_requirement(requirement, due.amount)
        held = yield from self.books.reserve(key, origin, escrow)
        if isinstance(held, Replay):
            raise PaymentRejected("this request's deposit was signed before; its answer decides, not a new one")
        return held

    def _send(self, attempt: Attempt, header: tuple[str, str], deposit: Payment | None) -> Program[Answer]:
        try:
            answer: Answer = yield Send(attempt.headers, header, strip=attempt.strip)
        except GeneratorExit:
            raise
        except BaseException as exc:
            if deposit is not None:
                yield from self.books.lost(deposit, f"no answer: {type(exc).__name__}")
            raise
        return answer

    def _adopt_chain(
        self, channel: Channel, record: ChannelRecord, *, keep_charged: bool = False, reopen: bool = False
    ) -> Program[Any]:
        """Take the chain's balance (and, unless `keep_charged`, its claimed total as what was charged); `reopen`
        a closed channel unless a withdrawal is pending."""
        chain: OnChain = yield ChannelChain("read", (channel.id, channel.config.withdraw_delay))
        changes: dict[str, Any] = {"chain_balance": chain.balance, "chain_claimed": chain.total_claimed}
        if not keep_charged:
            changes |= {"charged": max(record.charged, chain.total_claimed),
                        "signed_max": max(record.signed_max, chain.total_claimed)}  # fmt: skip
        if chain.withdrawing:
            changes["state"] = "withdrawing"
        elif reopen:
            changes |= {"state": "open", "withdraw_after": None}
        return (yield ChannelOp("update", (channel.key, channel.holder), changes))

    def _refused(
        self, attempt: Attempt, challenge: _flow.Challenge, requirement: PaymentRequirements, channel: Channel,
        record: ChannelRecord, answer: Answer, deposit: Payment | None, retry: bool, prepaid: bool,
    ) -> Program[Delivery | _flow.Challenge]:  # fmt: skip
        """A 402 to a signed request: a corrective one is answered once more; to a pre-payment, a challenge on new
        terms is handed back to be paid reactively; anything else is a refusal."""
        yield Close(answer)
        if deposit is not None:
            yield from self.books.lost(deposit, "the server answered the deposit with a 402")
        state = corrective(answer.headers, channel.id, requirement)
        if state is None and prepaid and (terms := new_terms(answer.headers, requirement)) is not None:
            return terms
        if not retry or state is None or not self._reads_chain:
            reason = "a corrective 402 it could not prove" if state is not None else refusal_reason(answer.headers)
            raise PaymentRejected(f"{attempt.origin} refused the channel payment: {reason}")
        chain: OnChain = yield ChannelChain("read", (channel.id, channel.config.withdraw_delay))
        believed = recover(channel.id, channel.chain_id, channel.config.payer_authorizer,
                           state.channel_state, state.voucher_state, chain)  # fmt: skip
        if only_just_sent(record, requirement.amount, believed):
            believed = Recovered(chain.total_claimed, 0, chain.balance, proven=False)
        logger.info("channel %s: a corrective 402 from %s, %s: charged %d", channel.key[:18], attempt.origin,
                    "proven by our own voucher" if believed.proven else "not proven, the chain believed",
                    believed.charged)  # fmt: skip
        charged = believed.charged if believed.proven else max(record.charged, believed.charged)
        changes = {"charged": charged, "chain_balance": believed.balance, "chain_claimed":
                   chain.total_claimed, "signed_max": max(record.signed_max, believed.signed_max)}  # fmt: skip
        updated = yield ChannelOp("update", (channel.key, channel.holder), changes)
        if served_before(attempt.key, record, believed):
            raise AlreadyPaid(
                f"this request (Idempotency-Key {attempt.key[:80]!r}) was served by {attempt.origin} and charged "
                f"{believed.charged - record.charged} through channel {channel.key[:18]}... before its answer was "
                "lost: it is not paid again"
            )
        record = updated
        return (yield from self._pay_leased(attempt, challenge, requirement, channel, record, retry=False))

    def _conclude(
        self, attempt: Attempt, requirement: PaymentRequirements, channel: Channel, record: ChannelRecord,
        payment: Payment, deposit: Payment | None, answer: Answer,
    ) -> Program[Delivery]:  # fmt: skip
        """Check the server's report (and a deposit on chain), then book what it charged (nothing, for an error answer
        that carries no report: the app failed)."""
        report = report_of(answer.headers)
        added = deposit.signed_amount if deposit is not None else 0
        expected = Expected(channel.id, requirement.amount, record.charged, record.chain_balance + added)
        extra = None if report is None else report.extra
        # A stream's headers leave before its charge is known (its report is in-band, at its end): until the server
        # says less (a corrective 402 proving our voucher), it has charged the most this voucher allows.
        streamed = extra is None and "text/event-stream" in answer.headers.get("content-type", "").lower()
        # An error answer without a report is the app's failure, charged nothing: the voucher stays committed.
        failed = extra is None and report is None and answer.status >= 400
        problem = None if streamed or failed else "no successful settlement response"
        problem = problem if extra is None else problem_with(extra, expected)
        if deposit is not None:
            believed = problem is None and report is not None
            record, deposit_problem = yield from self._deposited(channel, record, deposit, report, believed)
            problem = problem or deposit_problem
        if problem is not None:
            yield from caught(self.books, attempt.origin, channel, record, payment, problem, withdraw=self._reads_chain)
        if failed:
            return Delivery(answer, payment)
        charged = requirement.amount if extra is None else extra.charged_amount
        assert charged is not None  # noqa: S101 - problem_with says so
        # The voucher's ceiling went out durably: a crash that loses this charge is corrected by the server's next 402.
        yield ChannelOp("note", (channel.key, channel.holder), {"charged": record.charged + charged})
        if streamed:  # booked at the voucher's most until the stream's own receipt says what it charged (`streamed`)
            return Delivery(answer, payment, tap=ReceiptTap(payment, sse=True, keep_frames=self.keep_frames))
        payment.receipt = Receipt(amount=charged, source="PAYMENT-RESPONSE", network=requirement.network,
                                  payer=self.wallet.address, transaction=transaction_of(report))  # fmt: skip
        payment.status = PaymentStatus.SETTLED
        self._received(payment)
        return Delivery(answer, payment)

    def streamed(self, payment: Payment) -> Program[None]:
        """What a channel stream's in-band receipt taught `payment` (the tap's hook, through `Program.record`).

        A charge below the voucher's increment, which `_conclude` booked whole when the headers came, is booked
        instead, so that the next voucher follows the server's charge without a corrective 402: only while this
        voucher is still the channel's latest and its lease is free at once (the stream is not held up); otherwise
        the server's next corrective 402 settles it, as before. A receipt that contradicts the payment marks the
        server untrusted (see `x402pay._channel_lies.lied_in_stream`)."""
        if payment.mismatch is not None:
            if "mismatch" not in payment.booked:
                payment.booked.add("mismatch")
                channel = self._channel(payment.signed.requirement) if self._reads_chain else None
                yield from lied_in_stream(self.books, channel, payment, payment.mismatch)
            return
        receipt = payment.receipt
        if receipt is None or "receipt" in payment.booked:
            return
        payment.booked.add("receipt")
        over = payment.signed.amount - receipt.amount
        if over > 0:
            requirement = payment.signed.requirement
            channel = self._channel(requirement)
            ceiling = int(payment.signed.payload["voucher"]["maxClaimableAmount"])
            lower = partial(_charged_less, channel, ceiling, over)
            try:
                yield from leased(channel, payment.origin, requirement, lower, patience=0)
            except PaymentInFlight:
                logger.info("channel %s: busy as a stream's receipt came; the server's next 402 corrects the charge",
                            channel.key[:18])  # fmt: skip
        self._received(payment)

    def _deposited(
        self, channel: Channel, record: ChannelRecord, deposit: Payment, report: Report | None, believed: bool
    ) -> Program[tuple[ChannelRecord, str | None]]:
        """Whether the deposit landed: the chain says (with an ``rpc_url``), else the server's report if believed.
        A deposit that landed is escrow in the books and in the channel's record, whatever else the server said."""
        expected = record.chain_balance + deposit.signed_amount
        if self._reads_chain:
            chain: OnChain = yield ChannelChain("read", (channel.id, channel.config.withdraw_delay))
            balance = chain.balance
        else:
            balance = expected if believed else record.chain_balance
        if balance < expected:
            yield from self.books.lost(deposit, f"the deposit is not on chain (balance {balance}, not {expected})")
            missing = f"the deposit is not on chain: the channel's balance is {balance}, not {expected}"
            return (yield ChannelOp("update", (channel.key, channel.holder), {"chain_balance": balance})), missing
        yield from self._deposit_landed(deposit, report)
        changes = {"chain_balance": balance, "deposited": record.deposited + deposit.signed_amount}
        updated = yield ChannelOp("update", (channel.key, channel.holder), changes)
        problem = (
            None if balance == expected else f"after the deposit the channel's balance is {balance}, not {expected}"
        )
        return updated, problem

    def _received(self, payment: Payment) -> None:
        """The charge is booked: log it, and tell the caller's `on_receipt`."""
        assert payment.receipt is not None  # noqa: S101 - set just before
        _events.claimed(payment, payment.receipt)
        if self.books.on_receipt is not None:
            self.books.on_receipt(payment)

    def _deposit_landed(self, deposit: Payment, report: Report | None) -> Program[None]:
        """A deposit the chain shows: its reservation stays held as escrow (a claim, then settled at its amount)."""
        deposit.receipt = Receipt(amount=deposit.signed_amount, source="PAYMENT-RESPONSE",
                                  transaction=transaction_of(report))  # fmt: skip
        deposit.status = PaymentStatus.SETTLED
        yield from self.books.escrowed(deposit, verified=self._reads_chain)


def _charged_less(channel: Channel, ceiling: int, over: int, record: ChannelRecord) -> Program[None]:
    """Book `over` less as charged, if the voucher of `ceiling` is still the channel's latest and was booked whole."""
    if record.signed_max == ceiling == record.charged:
        yield ChannelOp("note", (channel.key, channel.holder), {"charged": ceiling - over})
