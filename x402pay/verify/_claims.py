"""What is verified (`Claim`) and what verification says (`Verification`): plain frozen values, no I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from eth_typing import ChecksumAddress
from eth_utils.address import is_address, to_checksum_address

from x402pay._protocol.networks import chain_id_of
from x402pay._schemes.exact import SignedPayment
from x402pay.errors import ReceiptMismatch

EIP3009: Final = "eip3009"
PERMIT2: Final = "permit2"
_SCHEMES: Final = ("exact", "upto")
_BYTES32: Final = re.compile(r"0x[0-9a-fA-F]{64}")
_UINT256_DIGITS: Final = 78


class Verdict(StrEnum):
    """What the chain says about a claim."""

    VERIFIED = "verified"  # the chain shows exactly what was claimed and signed
    PENDING = "pending"  # not (yet) decidable: not mined, too few confirmations, the RPC failed
    MISMATCH = "mismatch"  # the claim disagrees with the chain or with what was signed: fraud
    NOT_FOUND = "not_found"  # the claimed settlement does not exist


class Check(StrEnum):
    """The check that decided a verdict (a `Verification` of verdict ``verified`` has none)."""

    RPC = "rpc"  # the RPC endpoint failed or answered nonsense
    CHAIN_ID = "chain_id"  # the RPC's chain (and the receipt's network) is the signed one
    TRANSACTION = "transaction"  # the claimed tx hash is well formed, exists and is mined
    REPLAY = "replay"  # no earlier payment already claimed this transaction
    STATUS = "status"  # the transaction succeeded
    TRANSFER = "transfer"  # it carries a Transfer log of the signed asset from the payer to the recipient
    AMOUNT = "amount"  # whose value is the claimed amount
    SIGNED_AMOUNT = "signed_amount"  # the claimed amount is the signed one (exact) or at most it (upto)
    SPENDER = "spender"  # Permit2: the transaction calls the x402 proxy of the claim's scheme
    AUTHORIZATION = "authorization"  # the signed authorization (its nonce) is the one consumed
    LOCATE = "locate"  # a claim without tx hash: its settlement is found by nonce
    CONFIRMATIONS = "confirmations"  # the block is deep enough


@dataclass(frozen=True)
class Claim:
    """A settlement as claimed by a server, with the terms that were signed for it.

    `signed_amount` is the exact amount or the upto maximum; `nonce` is as signed (``0x`` + 64 hex for EIP-3009,
    a decimal uint256 for Permit2); `valid_before` is the EIP-3009 ``validBefore`` or the Permit2 ``deadline``.
    `claimed_amount` None means the signed amount. `tx_hash` None or ``""`` (queued or batched settlement) makes
    verification locate the settlement by its nonce. `claimed_chain_id` is the chain the receipt names, if any.
    A malformed `tx_hash` is the server's word and is judged (a mismatch), not refused here.
    """

    chain_id: int
    asset: ChecksumAddress
    payer: ChecksumAddress
    pay_to: ChecksumAddress
    scheme: str
    method: str
    signed_amount: int
    nonce: str
    valid_before: int
    claimed_amount: int | None = None
    tx_hash: str | None = None
    claimed_chain_id: int | None = None

    def __post_init__(self) -> None:
        for field in ("asset", "payer", "pay_to"):
            value = getattr(self, field)
            if not isinstance(value, str) or not is_address(value):
                raise ValueError(f"Claim.{field} is not an EVM address: {str(value)[:64]!r}")
            object.__setattr__(self, field, to_checksum_address(value))
        if self.scheme not in _SCHEMES or self.method not in (EIP3009, PERMIT2):
            raise ValueError(f"cannot verify scheme {self.scheme!r} paid by {self.method!r}")
        if self.scheme == "upto" and self.method != PERMIT2:
            raise ValueError("the upto scheme is paid by Permit2 only")
        if not _nonce_ok(self.method, self.nonce):
            raise ValueError(f"Claim.nonce {self.nonce[:80]!r} is not a {self.method} nonce")
        if not self.tx_hash:
            object.__setattr__(self, "tx_hash", None)

    @classmethod
    def from_signed(
        cls,
        signed: SignedPayment,
        claimed_amount: int | None = None,
        tx_hash: str | None = None,
        *,
        network: str | None = None,
    ) -> Claim:
        """The claim a server makes about `signed`: it charged `claimed_amount` in `tx_hash` on `network`.

        `network` is the receipt's network (CAIP-2 or a v1 name); a non-EVM one raises ValueError.
        """
        requirement = signed.requirement
        return cls(
            chain_id=requirement.chain_id,
            asset=to_checksum_address(requirement.asset),
            payer=signed.payer,
            pay_to=to_checksum_address(requirement.pay_to),
            scheme=requirement.scheme,
            method=signed.method,
            signed_amount=signed.amount,
            nonce=signed.nonce,
            valid_before=signed.valid_before,
            claimed_amount=claimed_amount,
            tx_hash=tx_hash,
            claimed_chain_id=chain_id_of(network) if network is not None else None,
        )

    @property
    def amount(self) -> int:
        """The amount the server says it charged (the signed amount when it said nothing)."""
        return self.signed_amount if self.claimed_amount is None else self.claimed_amount

    @property
    def nonce_int(self) -> int:
        """The nonce as an integer (both kinds)."""
        return int(self.nonce, 16) if self.method == EIP3009 else int(self.nonce)


def _nonce_ok(method: str, nonce: object) -> bool:
    if not isinstance(nonce, str):
        return False
    if method == EIP3009:
        return bool(_BYTES32.fullmatch(nonce))
    return nonce.isascii() and nonce.isdigit() and len(nonce) <= _UINT256_DIGITS and int(nonce) < 2**256


@dataclass(frozen=True)
class Verification:
    """The verdict on one claim, the check that decided it, and what the chain showed.

    For a mismatch, `claimed` and `actual` hold both sides of the failed check (what the server claimed or the
    payer signed, and what the chain or the signature says). `tx_hash` is the settlement's transaction (found by
    nonce when the claim had none); `block_number`, `confirmations` and `transferred` are facts read from it.
    """

    claim: Claim
    verdict: Verdict
    check: Check | None = None
    reason: str = ""
    claimed: int | str | None = None
    actual: int | str | None = None
    tx_hash: str | None = None
    block_number: int | None = None
    confirmations: int | None = None
    transferred: int | None = None

    @property
    def verified(self) -> bool:
        """True when the chain confirmed the claim."""
        return self.verdict is Verdict.VERIFIED

    def raise_for_mismatch(self) -> None:
        """Raise `ReceiptMismatch` if the verdict is ``mismatch``; do nothing otherwise."""
        if self.verdict is Verdict.MISMATCH:
            claimed, actual = self.claimed, self.actual
            sides = f" (claimed {claimed}, actual {actual})" if claimed is not None or actual is not None else ""
            raise ReceiptMismatch(f"receipt mismatch on {self.check}: {self.reason}{sides}", verification=self)
