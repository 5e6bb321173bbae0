"""What a `LocalFacilitator` knows of its payers' funds between chain reads: `Mirrors`.

A payment that passed the chain's checks leaves behind the payer's token balance and Permit2 allowance as read
then. For `ttl` seconds a later payment from that payer is checked against them locally (its terms and
signature are always checked), less what this facilitator has taken since: payments verified and not settled
(at their signed maximum), settlements sent (at their charge). A settlement mined before a read is in that read
and is no longer counted; one seen mined after the read began still is (counted twice: the mirror only errs
low). A payment this facilitator settled is refused locally while its authorization lasts.

The trade, the same as the official batch-settlement server makes for vouchers: the chain is not asked about a
repeat payer within `ttl`. A payer who moves their funds elsewhere, or uses a nonce with another facilitator, in
that time makes one settlement fail; the facilitator then drops that payer's mirror, and reads the chain for the
next payment, which it refuses if the funds are gone. The risk is the server's, never the payer's: nothing is
ever signed or charged beyond what the payer authorized.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Final, Literal

_PURGE_ABOVE: Final = 4096

Stage = Literal["held", "sent", "settled"]


@dataclass
class _Debit:
    amount: int
    deadline: int  # the authorization's validBefore / deadline (unix seconds): it cannot move money later
    stage: Stage
    settled_at: float = 0.0  # monotonic


@dataclass
class _Payer:
    balance: int | None = None
    allowance: int | None = None  # toward Permit2; None when not read
    read_at: float = 0.0  # monotonic, when the read began
    debits: dict[str, _Debit] = field(default_factory=dict)  # by payment key
    taken: int = 0  # the debits' sum, kept with them (a repeat payer may have thousands within the TTL)
    spent: dict[str, int] = field(default_factory=dict)  # payments settled here, by key: their deadlines

    def put(self, key: str, debit: _Debit) -> None:
        self.drop(key)
        self.debits[key] = debit
        self.taken += debit.amount

    def drop(self, key: str) -> None:
        debit = self.debits.pop(key, None)
        if debit is not None:
            self.taken -= debit.amount

    def trim(self, wall: float, began: float = 0.0) -> None:
        """Forget debits that expired, and settlements mined before the read that began at `began`."""
        self.debits = {
            key: debit
            for key, debit in self.debits.items()
            if debit.deadline >= wall and not (debit.stage == "settled" and debit.settled_at < began)
        }
        self.taken = sum(debit.amount for debit in self.debits.values())
        self.spent = {key: deadline for key, deadline in self.spent.items() if deadline >= wall}


Verdict = Literal["covered", "settled", "pending", "unknown"]


class Mirrors:
    """Payers' balances and Permit2 allowances as last read, less this facilitator's debits since (thread-safe).

    Payers are named by ``(asset, payer)`` in lower case; payments by their `payment_key`. `ttl` 0 keeps nothing:
    every payment is checked on chain.
    """

    def __init__(self, ttl: float) -> None:
        if not ttl >= 0:
            raise ValueError(f"verify_ttl is a number of seconds >= 0, not {ttl!r}")
        self.ttl = ttl
        self._payers: dict[tuple[str, str], _Payer] = {}
        self._skew = 0.0  # the chain's clock minus the wall clock, at the last read
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """How many payers are mirrored (or have debits)."""
        return len(self._payers)

    def now(self) -> int:
        """The chain's time as last seen against the wall clock: the later of the wall clock and that estimate."""
        wall = time.time()
        return int(max(wall, wall + self._skew))

    def check(self, payer: tuple[str, str], key: str, amount: int, *, permit2: bool) -> Verdict:
        """``covered``: the payment fits a fresh mirror; ``settled``: this facilitator settled it already;
        ``pending``: its settlement was sent and is not decided here; ``unknown``: the chain must be asked."""
        with self._lock:
            known = self._payers.get(payer)
            if known is not None and key in known.spent:
                return "settled"
            debit = known.debits.get(key) if known else None
            if debit is not None and debit.stage == "sent":
                return "pending"
            if known is None or known.balance is None or time.monotonic() - known.read_at > self.ttl:
                return "unknown"
            taken = known.taken - (debit.amount if debit is not None else 0)
            if known.balance - taken < amount:
                return "unknown"
            if permit2 and (known.allowance is None or known.allowance - taken < amount):
                return "unknown"
            return "covered"

    def read(
        self, payer: tuple[str, str], balance: int, allowance: int | None, *, began: float, chain_time: int
    ) -> None:
        """Record the balance (and allowance) read in a batch that began at monotonic `began`."""
        if self.ttl == 0:
            return
        with self._lock:
            self._skew = chain_time - time.time()
            known = self._payers.setdefault(payer, _Payer())
            known.balance, known.allowance, known.read_at = balance, allowance, began
            known.trim(time.time(), began)
            self._purge()

    def hold(self, payer: tuple[str, str], key: str, amount: int, deadline: int) -> None:
        """A verified payment: its signed maximum is taken until it settles (or its authorization expires)."""
        if self.ttl == 0:
            return
        with self._lock:
            known = self._payers.setdefault(payer, _Payer())
            if key not in known.debits:
                known.put(key, _Debit(amount, deadline, "held"))

    def sent(self, payer: tuple[str, str], key: str, charge: int, deadline: int) -> None:
        """A settlement was broadcast for `charge`."""
        if self.ttl == 0:
            return
        with self._lock:
            self._payers.setdefault(payer, _Payer()).put(key, _Debit(charge, deadline, "sent"))

    def settled(self, payer: tuple[str, str], key: str) -> None:
        """The settlement of `key` was mined and succeeded."""
        with self._lock:
            known = self._payers.get(payer)
            debit = known.debits.get(key) if known else None
            if known is not None and debit is not None:
                debit.stage, debit.settled_at = "settled", time.monotonic()
                known.spent[key] = debit.deadline

    def release(self, payer: tuple[str, str], key: str) -> None:
        """The payment moved nothing (settled for 0): forget its debit."""
        with self._lock:
            known = self._payers.get(payer)
            if known is not None:
                known.drop(key)

    def failed(self, payer: tuple[str, str], key: str) -> None:
        """A settlement failed: the payer's funds were not what the mirror said; read the chain next time."""
        with self._lock:
            known = self._payers.get(payer)
            if known is not None:
                known.drop(key)
                known.balance = known.allowance = None

    def _purge(self) -> None:
        if len(self._payers) <= _PURGE_ABOVE:
            return
        wall, oldest = time.time(), time.monotonic() - self.ttl
        for name in list(self._payers):
            known = self._payers[name]
            known.trim(wall)
            if known.read_at < oldest and not known.debits and not known.spent:
                del self._payers[name]
