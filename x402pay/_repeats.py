"""Repeats of a logical request that carries no ``Idempotency-Key``: an SDK's retry, or a caller's by hand.

A request without a key is identified by what it asks for: its method, its whole URL and a digest of its body
(its `fingerprint`). It is the same logical request as an earlier one with the same fingerprint, and so gets that
one's key (and re-sends its payment, never signing again), when:

- it is marked as a retry by an SDK (``x-stainless-retry-count`` of 1 or more: the OpenAI and Anthropic SDKs) and
  the earlier one started or ended less than `window` seconds ago; or
- it carries no such mark and the earlier one ended less than `window` seconds ago without an answer the caller
  could use: the connection failed or timed out, or the answer's status is one that clients retry (408, 409, 429,
  5xx).

A request an SDK marks as a first attempt (``x-stainless-retry-count: 0``), one that starts while its twin is still
under way, and one after an answer the caller could use are new logical requests. ``retry_window=0`` turns this
off; a caller's own ``Idempotency-Key`` always wins. The memory is this process's, and bounded.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

#: The retry mark of the Stainless-built SDKs (OpenAI, Anthropic): 0 on the first attempt, then 1, 2, ...
RETRY_MARK: Final = "x-stainless-retry-count"
#: The statuses after which HTTP clients retry by themselves.
RETRIED_STATUSES: Final = frozenset({408, 409, 429})
#: How many fingerprints are remembered at most.
_REMEMBERED: Final = 4096


def fingerprint(method: str, url: str | bytes, body: bytes) -> str:
    """What identifies a request without a key: its method, its whole URL (as text, or as the bytes on the wire)
    and its body."""
    digest = hashlib.sha256()
    for part in (method.upper().encode(), url.encode() if isinstance(url, str) else url, body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def retry_mark(headers: Mapping[str, str]) -> int | None:
    """The SDK's retry count of a request, or None when it carries none (or one that is not a count)."""
    value = headers.get(RETRY_MARK)
    return int(value) if value is not None and value.isdigit() else None


def unanswered(status: int) -> bool:
    """Whether an answer with `status` leaves the caller without what it asked for, so that it retries."""
    return status in RETRIED_STATUSES or status >= 500


@dataclass(slots=True)
class _Seen:
    key: str
    at: float
    running: int = 1
    unanswered: bool = False


class Repeats:
    """The recent logical requests without a caller's key, by fingerprint (thread-safe)."""

    def __init__(self, window: float, clock: Callable[[], float]) -> None:
        self.window = window
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: OrderedDict[str, _Seen] = OrderedDict()

    def key_of(self, print_: str, mark: int | None) -> str | None:
        """The key of the earlier logical request this one repeats (see the module's rules), or None."""
        if mark == 0:
            return None
        with self._lock:
            seen = self._seen.get(print_)
            if seen is None or self._clock() - seen.at > self.window:
                return None
            if mark is not None or (seen.unanswered and not seen.running):
                return seen.key
            return None

    def started(self, print_: str, key: str) -> None:
        """A logical request with this fingerprint and key is under way."""
        with self._lock:
            seen = self._seen.get(print_)
            if seen is not None and seen.key == key:
                seen.running += 1
                seen.at = self._clock()
            else:
                self._seen[print_] = _Seen(key, self._clock())
            self._seen.move_to_end(print_)
            while len(self._seen) > _REMEMBERED:
                self._seen.popitem(last=False)

    def ended(self, print_: str, key: str, *, answered: bool) -> None:
        """The attempt of `key` ended; `answered`: with an answer the caller could use."""
        with self._lock:
            seen = self._seen.get(print_)
            if seen is None or seen.key != key:
                return
            seen.running = max(0, seen.running - 1)
            seen.at = self._clock()
            seen.unanswered = not answered
