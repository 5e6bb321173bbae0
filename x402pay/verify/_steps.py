"""Verifying a claim as rounds of JSON-RPC requests, without I/O; `Batch` runs many claims' rounds together.

Each claim is a generator that yields the list of requests it needs next (``(method, params)``) and is sent back
their raw results in the same order; it returns the `Verification`. A claim with a tx hash takes one round
(two for an EIP-3009 receipt that is not there yet); one located by its nonce takes up to three. `Batch` merges
the requests of every claim waiting on a round and drops duplicates (the chain id and the head are asked once).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any, Final

from eth_abi.abi import encode

from x402pay._protocol.abi import (
    AUTHORIZATION_STATE,
    AUTHORIZATION_USED_TOPIC,
    NONCE_BITMAP,
    TRANSFER_TOPIC,
    Fragment,
    address_topic,
    input_types,
    selector,
)
from x402pay._protocol.addresses import PERMIT2_ADDRESS
from x402pay.verify._chain import (
    Evidence,
    Finding,
    RawObject,
    Rules,
    judge_evidence,
    nonce_topic,
    settles,
)
from x402pay.verify._claims import EIP3009, PERMIT2, Check, Claim, Verdict, Verification

logger = logging.getLogger("x402pay.verify")

Request = tuple[str, list[Any]]
CheckProgram = Generator[list[Request], list[Any], Verification]

#: How many recent transfers from the payer to the recipient a Permit2 claim without tx hash is matched against.
MAX_CANDIDATES: Final = 16
_CHAIN_ID: Final[Request] = ("eth_chainId", [])
_HEAD: Final[Request] = ("eth_getBlockByNumber", ["latest", False])
_TX_HASH: Final = re.compile(r"0x[0-9a-fA-F]{64}")
# What judging a malformed node answer raises (a missing key, a non-hex string, a null where a value belongs).
_MALFORMED: Final = (KeyError, IndexError, TypeError, ValueError, AttributeError)


@dataclass(frozen=True)
class RpcFailure:
    """A request that got no usable answer (an error object, a failed POST); `reason` says what happened."""

    reason: str


def claim_steps(claim: Claim, rules: Rules) -> CheckProgram:
    """Verify `claim`: yields request rounds, returns the `Verification`.

    A zero charge is judged by its nonce whatever the tx hash says: no money may have moved.
    """
    early = _precheck(claim)
    if early is not None:
        return early
    if claim.tx_hash is None or claim.amount == 0:
        return (yield from _by_nonce(claim, rules))
    return (yield from _by_hash(claim, claim.tx_hash.lower(), rules))


def _precheck(claim: Claim) -> Verification | None:
    """The checks that need no chain: the claim against itself and against what was signed."""
    finding = None
    if claim.claimed_chain_id is not None and claim.claimed_chain_id != claim.chain_id:
        reason = f"the receipt names chain {claim.claimed_chain_id}, the payment was signed for {claim.chain_id}"
        finding = Finding(Verdict.MISMATCH, Check.CHAIN_ID, reason, claim.claimed_chain_id, claim.chain_id)
    elif claim.tx_hash is not None and not _TX_HASH.fullmatch(claim.tx_hash):
        finding = Finding(Verdict.MISMATCH, Check.TRANSACTION, "not a transaction hash", claim.tx_hash[:80])
    elif claim.amount < 0 or claim.amount > claim.signed_amount:
        reason = f"the receipt claims {claim.amount}, outside what was signed (0 to {claim.signed_amount})"
        finding = Finding(Verdict.MISMATCH, Check.SIGNED_AMOUNT, reason, claim.amount, claim.signed_amount)
    elif claim.scheme == "exact" and claim.amount != claim.signed_amount:
        reason = f"the receipt claims {claim.amount} for an exact payment of {claim.signed_amount}"
        finding = Finding(Verdict.MISMATCH, Check.SIGNED_AMOUNT, reason, claim.amount, claim.signed_amount)
    return None if finding is None else decided(claim, finding)


def decided(claim: Claim, finding: Finding) -> Verification:
    """A `Verification` decided before any transaction was looked at."""
    return Verification(claim, finding.verdict, finding.check, finding.reason, finding.claimed, finding.actual)


def _wrong_chain(claim: Claim, chain_id: str) -> Verification | None:
    if int(chain_id, 16) == claim.chain_id:
        return None
    reason = f"the RPC serves chain {int(chain_id, 16)}, the payment was signed for chain {claim.chain_id}"
    return decided(claim, Finding(Verdict.MISMATCH, Check.CHAIN_ID, reason, claim.chain_id, int(chain_id, 16)))


def _by_hash(claim: Claim, tx_hash: str, rules: Rules) -> CheckProgram:
    permit2 = claim.method == PERMIT2
    extra = [_transaction(tx_hash), _nonce_state(claim)] if permit2 else []
    chain_id, head, receipt, *more = yield [_CHAIN_ID, _HEAD, _receipt(tx_hash), *extra]
    wrong = _wrong_chain(claim, chain_id)
    if wrong is not None:
        return wrong
    tx, nonce_used = (more[0], _nonce_is_used(claim, more[1])) if permit2 else (None, None)
    if receipt is None and not permit2:  # tell a transaction waiting to be mined from one that does not exist
        (tx,) = yield [_transaction(tx_hash)]
    return judge_evidence(Evidence(claim, tx_hash, int(head["number"], 16), receipt, tx, nonce_used), rules)


def _by_nonce(claim: Claim, rules: Rules) -> CheckProgram:
    chain_id, head, state = yield [_CHAIN_ID, _HEAD, _nonce_state(claim)]
    wrong = _wrong_chain(claim, chain_id)
    if wrong is not None:
        return wrong
    if not _nonce_is_used(claim, state):
        return _unused(claim, int(head["timestamp"], 16))
    if claim.amount == 0:
        reason = "a zero charge was claimed, but the signed authorization was used"
        return decided(claim, Finding(Verdict.MISMATCH, Check.AUTHORIZATION, reason, "unused", "used"))
    return (yield from _locate(claim, int(head["number"], 16), rules))


def _locate(claim: Claim, head: int, rules: Rules) -> CheckProgram:
    """Find and judge_evidence the settlement of a claim whose nonce is used, in the last `lookback_blocks` blocks."""
    (logs,) = yield [_settlement_logs(claim, max(0, head - rules.lookback_blocks))]
    candidates = _recent_transactions(logs)
    answers = yield [request for tx_hash in candidates for request in (_receipt(tx_hash), _transaction(tx_hash))]
    for tx_hash, receipt, tx in zip(candidates, answers[0::2], answers[1::2], strict=True):
        if claim.method == EIP3009 or settles(tx, claim):
            return judge_evidence(Evidence(claim, tx_hash, head, receipt, tx, True), rules)
    reason = f"the authorization was used, but no settlement of it is in the last {rules.lookback_blocks} blocks"
    return decided(claim, Finding(Verdict.NOT_FOUND, Check.LOCATE, reason, claim.nonce))


def _unused(claim: Claim, now: int) -> Verification:
    """The verdict on a claim whose authorization is still unused at chain time `now`."""
    expired = now > claim.valid_before
    if claim.amount == 0 and expired:
        return Verification(claim, Verdict.VERIFIED, reason="zero charge: the authorization expired unused")
    if claim.amount == 0:
        reason = f"zero charge: the authorization stays usable until {claim.valid_before}"
        return decided(claim, Finding(Verdict.PENDING, Check.AUTHORIZATION, reason, claim.valid_before, now))
    if expired:
        reason = "a settlement was claimed, but the signed authorization expired unused"
        return decided(claim, Finding(Verdict.MISMATCH, Check.AUTHORIZATION, reason, "used", "expired unused"))
    reason = "not settled yet: the signed authorization is unused"
    return decided(claim, Finding(Verdict.PENDING, Check.LOCATE, reason, claim.nonce, "unused"))


def _receipt(tx_hash: str) -> Request:
    return ("eth_getTransactionReceipt", [tx_hash])


def _transaction(tx_hash: str) -> Request:
    return ("eth_getTransactionByHash", [tx_hash])


def _nonce_state(claim: Claim) -> Request:
    """An eth_call: EIP-3009 ``authorizationState(payer, nonce)``, or Permit2 ``nonceBitmap(payer, nonce >> 8)``."""
    if claim.method == EIP3009:
        nonce = claim.nonce_int.to_bytes(32, "big")
        call = {"to": claim.asset, "data": _calldata(AUTHORIZATION_STATE, claim.payer, nonce)}
    else:
        call = {"to": PERMIT2_ADDRESS, "data": _calldata(NONCE_BITMAP, claim.payer, claim.nonce_int >> 8)}
    return ("eth_call", [call, "latest"])


def _calldata(function: Fragment, *arguments: Any) -> str:
    return selector(function) + encode(input_types(function), arguments).hex()


def _nonce_is_used(claim: Claim, state: str) -> bool:
    word = int(state, 16)
    return word != 0 if claim.method == EIP3009 else bool(word >> (claim.nonce_int & 0xFF) & 1)


def _settlement_logs(claim: Claim, from_block: int) -> Request:
    """EIP-3009: the asset's ``AuthorizationUsed(payer, nonce)``; Permit2: its Transfers from payer to recipient."""
    if claim.method == EIP3009:
        topics = [AUTHORIZATION_USED_TOPIC, address_topic(claim.payer), nonce_topic(claim)]
    else:
        topics = [TRANSFER_TOPIC, address_topic(claim.payer), address_topic(claim.pay_to)]
    return (
        "eth_getLogs",
        [{"address": claim.asset, "topics": topics, "fromBlock": hex(from_block), "toBlock": "latest"}],
    )


def _recent_transactions(logs: list[RawObject]) -> list[str]:
    """The transactions of `logs`, newest first, at most `MAX_CANDIDATES`."""
    ordered = sorted(logs, key=lambda log: (int(log["blockNumber"], 16), int(log["logIndex"], 16)), reverse=True)
    return list(dict.fromkeys(str(log["transactionHash"]).lower() for log in ordered))[:MAX_CANDIDATES]


def unpack(responses: object, count: int) -> list[Any]:
    """The results of a JSON-RPC batch answer (already sorted by id), an `RpcFailure` for each request without one."""
    if isinstance(responses, dict):
        return [RpcFailure(_error_text(responses.get("error")))] * count
    if not isinstance(responses, list) or len(responses) != count:
        return [RpcFailure("the RPC answered a batch with the wrong number of responses")] * count
    return [_result(item) for item in responses]


def _result(item: object) -> Any:
    """One item of a batch answer: its result, or an `RpcFailure` (an error, or not a JSON-RPC response at all)."""
    if not isinstance(item, dict):
        return RpcFailure(f"the RPC answered a batch item that is not an object: {str(item)[:80]}")
    if "error" in item:
        return RpcFailure(_error_text(item["error"]))
    if "result" not in item:
        return RpcFailure("the RPC answered a batch item with neither result nor error")
    return item["result"]


def _error_text(error: object) -> str:
    message = error.get("message") if isinstance(error, dict) else error
    return f"the RPC answered an error: {str(message)[:200]}"


class Batch:
    """Runs the steps of many claims in lockstep: every round's requests go out together, deduplicated."""

    def __init__(self, claims: Sequence[Claim], rules: Rules) -> None:
        self._claims = list(claims)
        self._done: dict[int, Verification] = {}
        self._waiting: dict[int, tuple[CheckProgram, list[str]]] = {}
        self._requests: dict[str, Request] = {}
        for index, claim in enumerate(self._claims):
            self._advance(index, claim_steps(claim, rules), None)

    def requests(self) -> list[Request]:
        """What the waiting claims need next, each distinct request once ([] when every claim is decided)."""
        return list(self._requests.values())

    def feed(self, results: Sequence[Any]) -> None:
        """Hand over the results of `requests()` (same order; an `RpcFailure` where a request failed)."""
        answers = dict(zip(self._requests, results, strict=True))
        waiting, self._waiting, self._requests = self._waiting, {}, {}
        for index, (steps, keys) in waiting.items():
            mine = [answers[key] for key in keys]
            failure = next((result for result in mine if isinstance(result, RpcFailure)), None)
            if failure is None:
                self._advance(index, steps, mine)
                continue
            steps.close()
            self._finish(index, decided(self._claims[index], Finding(Verdict.PENDING, Check.RPC, failure.reason)))

    def verifications(self) -> list[Verification]:
        """Every claim's verification, in the order of the claims (call once `requests()` is empty)."""
        return [self._done[index] for index in range(len(self._claims))]

    def _advance(self, index: int, steps: CheckProgram, results: list[Any] | None) -> None:
        try:
            requests = next(steps) if results is None else steps.send(results)
        except StopIteration as stop:
            self._finish(index, stop.value)
            return
        except _MALFORMED as exc:
            reason = f"the RPC's answer could not be read: {type(exc).__name__}: {str(exc)[:200]}"
            self._finish(index, decided(self._claims[index], Finding(Verdict.PENDING, Check.RPC, reason)))
            return
        if not requests:  # nothing to ask this round (e.g. no candidate transaction): go on at once
            self._advance(index, steps, [])
            return
        keys = [_key(request) for request in requests]
        self._requests.update(zip(keys, requests, strict=True))
        self._waiting[index] = (steps, keys)

    def _finish(self, index: int, verification: Verification) -> None:
        self._done[index] = verification
        logger.debug(
            "verify %s: %s (%s) %s",
            verification.tx_hash or "-",
            verification.verdict,
            verification.check,
            verification.reason,
        )


def _key(request: Request) -> str:
    return request[0] + json.dumps(request[1], separators=(",", ":"), sort_keys=True)
