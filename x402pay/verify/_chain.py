"""Judging a settlement transaction against a claim: pure functions over raw JSON-RPC data (hex strings).

Logs are filtered by the emitting contract's address before anything is decoded, so a look-alike token that emits
an identical ``Transfer`` can never stand in for the signed asset.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from eth_abi.abi import decode
from eth_abi.exceptions import DecodingError
from eth_utils.address import to_checksum_address

from x402pay._protocol.abi import (
    AUTHORIZATION_USED_TOPIC,
    EXACT_PROXY_ABI,
    TRANSFER_TOPIC,
    UPTO_PROXY_ABI,
    Fragment,
    address_topic,
    input_types,
    selector,
)
from x402pay._protocol.addresses import EXACT_PERMIT2_PROXY_ADDRESS, UPTO_PERMIT2_PROXY_ADDRESS
from x402pay.verify._claims import EIP3009, Check, Claim, Verdict, Verification

RawObject = dict[str, Any]

#: How far back (in blocks) a claim without tx hash is searched for in the logs.
DEFAULT_LOOKBACK_BLOCKS: Final = 5_000


@dataclass(frozen=True)
class _SettleCall:
    """One x402 proxy settle function: its argument types and where the permit and the owner sit."""

    types: tuple[str, ...]
    permit: int
    owner: int


def _calls(abi: list[Fragment]) -> dict[str, _SettleCall]:
    """A proxy's settle functions by selector."""
    calls = {}
    for function in abi:
        names = [param["name"] for param in function["inputs"]]
        calls[selector(function)] = _SettleCall(input_types(function), names.index("permit"), names.index("owner"))
    return calls


#: The settle functions of each proxy (by lower-case address), by selector.
SETTLE_CALLS: Final = {
    EXACT_PERMIT2_PROXY_ADDRESS.lower(): _calls(EXACT_PROXY_ABI),
    UPTO_PERMIT2_PROXY_ADDRESS.lower(): _calls(UPTO_PROXY_ABI),
}
_PROXY_OF_SCHEME: Final = {"exact": EXACT_PERMIT2_PROXY_ADDRESS.lower(), "upto": UPTO_PERMIT2_PROXY_ADDRESS.lower()}


def nonce_topic(claim: Claim) -> str:
    """The claim's nonce as a bytes32 topic (lower case)."""
    return "0x" + claim.nonce_int.to_bytes(32, "big").hex()


def settle_owner_and_nonce(tx: RawObject, scheme: str) -> tuple[str, int] | None:
    """``(owner, permit nonce)`` from a transaction calling the `scheme`'s x402 proxy; None for any other call."""
    proxy = _PROXY_OF_SCHEME[scheme]
    data = str(tx.get("input") or "")
    call = SETTLE_CALLS[proxy].get(data[:10]) if str(tx.get("to") or "").lower() == proxy else None
    if call is None:
        return None
    try:
        arguments = decode(call.types, bytes.fromhex(data[10:]))
    except (DecodingError, ValueError):
        return None
    return str(arguments[call.owner]).lower(), int(arguments[call.permit][1])


def settles(tx: RawObject, claim: Claim) -> bool:
    """Whether `tx` calls the x402 proxy of the claim's scheme to settle the claim's payer and Permit2 nonce."""
    return settle_owner_and_nonce(tx, claim.scheme) == (claim.payer.lower(), claim.nonce_int)


@dataclass(frozen=True)
class Rules:
    """How strict verification is: confirmations required, the ledger's replay hook, the log-scan window."""

    confirmations: int = 0
    seen_transactions: Callable[[str], bool] | None = None
    lookback_blocks: int = DEFAULT_LOOKBACK_BLOCKS


@dataclass(frozen=True)
class Finding:
    """The outcome of one failed (or undecided) check."""

    verdict: Verdict
    check: Check
    reason: str
    claimed: int | str | None = None
    actual: int | str | None = None


@dataclass(frozen=True)
class Evidence:
    """Everything read from the chain about one claimed settlement transaction.

    `receipt` and `tx` are raw JSON-RPC objects (None: unknown to the node; `tx` is only fetched when needed);
    `nonce_used` is the Permit2 bitmap bit (None for EIP-3009, whose proof is an event in the receipt).
    """

    claim: Claim
    tx_hash: str
    head: int
    receipt: RawObject | None
    tx: RawObject | None = None
    nonce_used: bool | None = None

    @property
    def block_number(self) -> int | None:
        """The block the transaction was mined in."""
        return int(self.receipt["blockNumber"], 16) if self.receipt else None

    @property
    def confirmations(self) -> int | None:
        """Blocks from the transaction's to the head, both included."""
        block = self.block_number
        return None if block is None else max(0, self.head - block + 1)

    def logs_of(self, address: str) -> list[RawObject]:
        """The receipt's logs emitted by `address`, and only those."""
        logs: list[RawObject] = (self.receipt or {}).get("logs") or []
        return [log for log in logs if str(log["address"]).lower() == address.lower()]

    def payer_transfers(self) -> list[int]:
        """Values of the asset's Transfer logs from the payer to the recipient."""
        wanted = [TRANSFER_TOPIC, address_topic(self.claim.payer), address_topic(self.claim.pay_to)]
        logs = self.logs_of(self.claim.asset)
        return [int(log["data"], 16) for log in logs if [topic.lower() for topic in log["topics"]] == wanted]

    def conclude(self, verdict: Verdict, finding: Finding | None = None) -> Verification:
        """The `Verification` of this evidence, decided by `finding` (None: verified)."""
        values = self.payer_transfers()
        transferred = self.claim.amount if self.claim.amount in values else next(iter(values), None)
        return Verification(
            claim=self.claim,
            verdict=verdict,
            check=finding.check if finding else None,
            reason=finding.reason if finding else f"settled in {self.tx_hash}",
            claimed=finding.claimed if finding else None,
            actual=finding.actual if finding else None,
            tx_hash=self.tx_hash,
            block_number=self.block_number,
            confirmations=self.confirmations,
            transferred=transferred,
        )


def judge_evidence(evidence: Evidence, rules: Rules) -> Verification:
    """Run the checks in order; the first that fails decides the verdict."""
    for check in _CHECKS:
        finding = check(evidence, rules)
        if finding is not None:
            return evidence.conclude(finding.verdict, finding)
    return evidence.conclude(Verdict.VERIFIED)


def _replay(evidence: Evidence, rules: Rules) -> Finding | None:
    if rules.seen_transactions is None or not rules.seen_transactions(evidence.tx_hash):
        return None
    reason = f"an earlier payment already claimed transaction {evidence.tx_hash}"
    return Finding(Verdict.MISMATCH, Check.REPLAY, reason, evidence.tx_hash, "claimed before")


def _mined(evidence: Evidence, _: Rules) -> Finding | None:
    if evidence.receipt is not None:
        return None
    if evidence.tx is not None:
        return Finding(Verdict.PENDING, Check.TRANSACTION, f"transaction {evidence.tx_hash} is not mined yet")
    reason = f"no transaction {evidence.tx_hash} on chain {evidence.claim.chain_id}"
    return Finding(Verdict.NOT_FOUND, Check.TRANSACTION, reason, evidence.tx_hash)


def _succeeded(evidence: Evidence, _: Rules) -> Finding | None:
    if evidence.receipt is not None and evidence.receipt.get("status") == "0x1":
        return None
    return Finding(Verdict.MISMATCH, Check.STATUS, f"transaction {evidence.tx_hash} reverted", "success", "reverted")


def _transfer(evidence: Evidence, _: Rules) -> Finding | None:
    if evidence.payer_transfers():
        return None
    claim = evidence.claim
    claimed = f"Transfer of {claim.asset} from {claim.payer} to {claim.pay_to}"
    return Finding(Verdict.MISMATCH, Check.TRANSFER, f"no {claimed} in the transaction", claimed, _transfers(evidence))


def _transfers(evidence: Evidence) -> str:
    """What Transfer logs the transaction does carry, for the mismatch report."""
    logs: list[RawObject] = (evidence.receipt or {}).get("logs") or []
    shown = [
        f"{log['address']}: {_topic_address(log['topics'][1])} -> {_topic_address(log['topics'][2])}"
        f" {int(log['data'], 16)}"
        for log in logs
        if len(log["topics"]) == 3 and str(log["topics"][0]).lower() == TRANSFER_TOPIC
    ]
    return "; ".join(shown[:5]) or "no Transfer log"


def _topic_address(topic: str) -> str:
    return "0x" + topic[-40:]


def _amount(evidence: Evidence, _: Rules) -> Finding | None:
    values = evidence.payer_transfers()
    if evidence.claim.amount in values:
        return None
    actual: int | str = values[0] if len(values) == 1 else ", ".join(map(str, values))
    reason = f"the transaction transferred {actual}, the receipt claims {evidence.claim.amount}"
    return Finding(Verdict.MISMATCH, Check.AMOUNT, reason, evidence.claim.amount, actual)


def _authorization(evidence: Evidence, _: Rules) -> Finding | None:
    if evidence.claim.method == EIP3009:
        return _eip3009_used(evidence)
    return _permit2_used(evidence)


def _eip3009_used(evidence: Evidence) -> Finding | None:
    claim = evidence.claim
    used = _authorizations_used(evidence)
    if nonce_topic(claim) in used:
        return None
    reason = "the transaction did not consume the signed EIP-3009 authorization (AuthorizationUsed)"
    return Finding(Verdict.MISMATCH, Check.AUTHORIZATION, reason, claim.nonce, ", ".join(used) or "none")


def _authorizations_used(evidence: Evidence) -> list[str]:
    """The nonces of the payer's ``AuthorizationUsed`` logs emitted by the asset."""
    wanted = [AUTHORIZATION_USED_TOPIC, address_topic(evidence.claim.payer)]
    logs = evidence.logs_of(evidence.claim.asset)
    topics = [[str(topic).lower() for topic in log["topics"]] for log in logs]
    return [found[2] for found in topics if len(found) == 3 and found[:2] == wanted]


def _permit2_used(evidence: Evidence) -> Finding | None:
    claim, tx = evidence.claim, evidence.tx or {}
    proxy = _PROXY_OF_SCHEME[claim.scheme]
    to = str(tx.get("to") or "")
    if to.lower() != proxy:
        reason = f"the transaction does not call the x402 {claim.scheme} Permit2 proxy"
        actual = to_checksum_address(to) if to else "a contract creation"
        return Finding(Verdict.MISMATCH, Check.SPENDER, reason, to_checksum_address(proxy), actual)
    if not settles(tx, claim):
        settled = settle_owner_and_nonce(tx, claim.scheme)
        actual = "not a settle call" if settled is None else f"owner {settled[0]}, nonce {settled[1]}"
        reason = "the transaction settles another Permit2 authorization than the signed one"
        claimed = f"owner {claim.payer.lower()}, nonce {claim.nonce}"
        return Finding(Verdict.MISMATCH, Check.AUTHORIZATION, reason, claimed, actual)
    if evidence.nonce_used is False:
        reason = "the signed Permit2 nonce is not marked used in nonceBitmap"
        return Finding(Verdict.MISMATCH, Check.AUTHORIZATION, reason, "used", "unused")
    return None


def _confirmations(evidence: Evidence, rules: Rules) -> Finding | None:
    have = evidence.confirmations or 0
    if have >= rules.confirmations:
        return None
    reason = f"{have} of {rules.confirmations} confirmations"
    return Finding(Verdict.PENDING, Check.CONFIRMATIONS, reason, rules.confirmations, have)


_CHECKS: Final[tuple[Callable[[Evidence, Rules], Finding | None], ...]] = (
    _replay,
    _mined,
    _succeeded,
    _transfer,
    _amount,
    _authorization,
    _confirmations,
)
