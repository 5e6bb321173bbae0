"""A background watcher for long-running bots: `reconcile` every so often, so the books follow the chain unasked."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Self

from x402pay.ledger._model import ReconcileReport

if TYPE_CHECKING:
    from x402pay.ledger._chain import Chain
    from x402pay.ledger._core import Ledger

logger = logging.getLogger(__name__)


class Watcher:
    """Runs ``ledger.reconcile(chain)`` every `every` seconds on a daemon thread until `stop` (or the ``with`` block
    ends). `chain` is a `Chain`, or a callable that makes one on the watcher's thread (so building it, which may ask
    the RPC, never delays the caller). A failed round is logged and the next one runs as planned."""

    def __init__(
        self, ledger: Ledger, chain: Chain | Callable[[], Chain], *, every: float,
        on_report: Callable[[ReconcileReport], None] | None = None,
    ) -> None:  # fmt: skip
        if every <= 0:
            raise ValueError(f"every must be a number of seconds above 0, not {every!r}")
        self._ledger = ledger
        self._chain = chain
        self._every = every
        self._on_report = on_report
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="x402pay-reconcile", daemon=True)

    def start(self) -> Self:
        """Start watching (the first round runs at once)."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop after the round in progress, if any."""
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self) -> None:
        chain: Chain | None = None
        while not self._stopped.is_set():
            try:
                chain = chain or (self._chain() if callable(self._chain) else self._chain)
                report = self._ledger.reconcile(chain)
                if self._on_report is not None:
                    self._on_report(report)
            except Exception:  # a round that failed (RPC down, database locked) must not end the watch
                logger.info("a reconcile round failed; the next one runs in %s s", self._every, exc_info=True)
            self._stopped.wait(self._every)
