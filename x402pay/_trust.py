"""Untrusted origins: a server caught sending a fraudulent receipt is not paid again until a person clears it."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from x402pay.errors import TrustStoreError


def _is_mark(mark: object) -> bool:
    return isinstance(mark, dict) and isinstance(mark.get("reason"), str)


class TrustStore:
    """Marks on origins that lied about a payment, with the reason; in memory, or in a JSON file shared by processes.

    A file-backed store is read on every check, so a mark set by one bot (or cleared with ``x402pay trust reset``)
    applies to all the processes that use the file. A file that cannot be read fails closed: `TrustStoreError`, and
    nothing is paid, never "no marks". With a ledger, the marks are also kept in the ledger, for the whole fleet.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else None
        self._memory: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def reason(self, origin: str) -> str | None:
        """Why `origin` is untrusted, or None when it may be paid."""
        mark = self._read().get(origin.lower())
        return str(mark["reason"]) if mark else None

    def mark(self, origin: str, reason: str) -> None:
        """Mark `origin` untrusted (the first reason is kept; later ones do not overwrite it)."""
        with self._edit() as marks:
            marks.setdefault(origin.lower(), {"reason": reason[:500], "marked_at": int(time.time())})

    def reset(self, origin: str) -> bool:
        """Clear the mark on `origin`; False if it had none."""
        with self._edit() as marks:
            return marks.pop(origin.lower(), None) is not None

    def marks(self) -> dict[str, str]:
        """Every untrusted origin and its reason."""
        return {origin: str(mark["reason"]) for origin, mark in sorted(self._read().items())}

    def _read(self) -> dict[str, dict[str, Any]]:
        if self.path is None:
            with self._lock:
                return dict(self._memory)
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:  # unreadable, not UTF-8, not JSON: the marks are unknown
            raise TrustStoreError(f"trust file {self.path} cannot be read ({type(exc).__name__})") from exc
        if not isinstance(data, dict) or not all(_is_mark(mark) for mark in data.values()):
            raise TrustStoreError(f"trust file {self.path} does not hold trust marks (origin -> reason)")
        return data

    @contextmanager
    def _edit(self) -> Iterator[dict[str, dict[str, Any]]]:
        if self.path is None:
            with self._lock:
                yield self._memory
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(self.path.with_suffix(".lock")):
            marks = self._read()
            yield marks
            temporary = self.path.with_suffix(".tmp")
            temporary.write_text(json.dumps(marks, indent=2, sort_keys=True), encoding="utf-8")
            temporary.replace(self.path)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the file `path` while the block runs, against every process that locks it too."""
    with open(path, "a+b") as lock:
        if sys.platform == "win32":
            import msvcrt

            lock.seek(0)
            try:
                msvcrt.locking(lock.fileno(), msvcrt.LK_LOCK, 1)  # retries for about ten seconds, then OSError
            except OSError as exc:
                raise TrustStoreError(f"trust file lock {path} stayed held by another process ({exc})") from exc
            try:
                yield
            finally:
                lock.seek(0)
                msvcrt.locking(lock.fileno(), msvcrt.LK_UNLCK, 1)
        else:
            try:
                import fcntl
            except ImportError as exc:
                raise TrustStoreError(
                    f"cannot lock {path}: this Python has no fcntl, so processes cannot share a trust file safely; "
                    "use TrustStore() without a path (the marks are then kept in memory)"
                ) from exc
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
            yield
