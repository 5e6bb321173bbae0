"""Who holds a reservation, and whether it can still be signing: so a retry after its holder died takes it over.

A reservation records its holder as ``host/pid/start``: the machine, the process id, and the process's start time
(so a reused pid is not mistaken for the holder). On the holder's machine, another process can tell at once
whether the holder is gone. A holder on another machine cannot be asked; its reservation is taken over once it is
older than `LEASE` seconds, far longer than reserving, reading an allowance (bounded by the RPC timeout) and
signing take.
"""

from __future__ import annotations

import os
import secrets
import socket
from functools import cache
from typing import Final

#: Seconds after which a reservation of a holder on another machine counts as abandoned.
LEASE: Final = 60


def current_holder() -> str:
    """This process, as a reservation records it."""
    return _holder_of(os.getpid())


def new_holder(role: str) -> str:
    """A name for one holder of a lease: this process (so that another on this machine can tell when it has ended:
    `process_is_gone`), `role`, and a random part of its own."""
    return f"{current_holder()}#{role}-{secrets.token_hex(8)}"


@cache
def _holder_of(pid: int) -> str:
    return f"{socket.gethostname()}/{pid}/{_start_time(pid)}"


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), or ``?`` where it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            text = stat.read()
    except OSError:
        return "?"
    return text[text.rindex(")") + 2 :].split()[19]  # field 22, counted after the command name


def holder_is_gone(holder: str | None, created_at: int, now: int) -> bool:
    """Whether the reservation's holder can no longer be signing for it."""
    if holder is None or holder.count("/") != 2:
        return False  # written before holders were recorded: the stale timeout of reconcile() frees it
    if not _asks_here(holder):
        return now - created_at > LEASE
    return process_is_gone(holder)


def process_is_gone(holder: str) -> bool:
    """Whether `holder` (``host/pid/start``, maybe followed by ``#`` and a name of the holder's own) is a process of
    this machine that has ended; False for a process of another machine, which cannot be asked."""
    process = holder.split("#", 1)[0]
    if process.count("/") != 2 or not _asks_here(process):
        return False
    _, pid_text, start = process.split("/")
    pid = int(pid_text)
    try:
        os.kill(pid, 0)  # signal 0: a question, not a signal
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    return start != "?" and _start_time(pid) != start  # the pid was reused by another process


def _asks_here(process: str) -> bool:
    """Whether `process` (``host/pid/start``) is of this machine, and this system can ask whether it still runs."""
    host, pid_text, _ = process.split("/")
    return host == socket.gethostname() and os.name == "posix" and pid_text.isdigit()
