"""What every benchmark shares: interleaved timing rounds and medians, the machine's description, BENCHMARKS.md.

Contenders are timed side by side in one run: every round runs each contender once, in an order that rotates from
round to round, after one untimed warm-up round. Figures kept: the median rate over the rounds, and for a ratio
between two contenders the median of the per-round ratios (paired, so that load drifting across rounds cancels out).
The garbage collector is off while a batch is timed, as in `timeit`. The clock is wall time by default; a benchmark
of pure CPU work may pass `CPU_CLOCK` (this process's CPU time), which other work on a shared machine skews less.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import math
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

#: Where results go: BENCHMARKS.md at the repository root.
BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
_TITLE = "# Benchmarks\n\nWritten by the scripts in `bench/` (see bench/README.md); one section per benchmark.\n"

#: A contender runs one batch of operations and returns how many it did.
Batch = Callable[[], int]
Clock = Callable[[], float]
WALL_CLOCK: Clock = time.perf_counter
CPU_CLOCK: Clock = time.process_time


def interleaved_rates(
    contenders: Mapping[str, Batch], rounds: int, clock: Clock = WALL_CLOCK
) -> dict[str, list[float]]:
    """Operations per second of `clock` time of each contender in each of `rounds` interleaved rounds."""
    names = list(contenders)
    rates: dict[str, list[float]] = {name: [] for name in names}
    for round_number in range(rounds + 1):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            rate = _rate(contenders[name], clock)
            if round_number:  # round 0 warms caches up and is not counted
                rates[name].append(rate)
    return rates


def median(values: list[float]) -> float:
    """The median of `values`."""
    return statistics.median(values)


def median_interval(values: list[float]) -> tuple[float, float, float]:
    """The median of `values`, and the 95% confidence interval of that median (the order statistics around it that a
    binomial count puts it between, normal approximation)."""
    ordered = sorted(values)
    spread = 0.98 * math.sqrt(len(ordered))
    low = max(0, math.floor(len(ordered) / 2 - spread))
    high = min(len(ordered) - 1, math.ceil(len(ordered) / 2 + spread))
    return statistics.median(ordered), ordered[low], ordered[high]


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """The median of the round-by-round ratios ``numerator[i] / denominator[i]``."""
    return statistics.median(top / bottom for top, bottom in zip(numerator, denominator, strict=True))


def _rate(batch: Batch, clock: Clock) -> float:
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = clock()
        operations = batch()
        elapsed = clock() - start
    finally:
        if gc_was_enabled:
            gc.enable()
    return operations / elapsed


def machine() -> str:
    """CPU model, cores, OS, Python, and the load average when asked (other work on the machine skews rates)."""
    model = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(encoding="utf-8"), re.MULTILINE)
        model = found.group(1).strip() if found else model
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    system = f"{platform.system()} {platform.machine()}"
    load = "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()) if hasattr(os, "getloadavg") else ""
    return f"{model}, {cores} cores usable, {system}, Python {platform.python_version()}; {load}"


def versions(*distributions: str) -> str:
    """``name version`` of each installed distribution, comma separated."""
    return ", ".join(f"{name} {metadata.version(name)}" for name in distributions)


def today() -> str:
    """The UTC date and time of the run, to the minute."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def write_section(key: str, markdown: str, path: Path = BENCHMARKS_MD) -> None:
    """Put `markdown` in `path` between the markers of section `key`, replacing an older run of it."""
    begin, end = f"<!-- bench:{key}:begin -->", f"<!-- bench:{key}:end -->"
    block = f"{begin}\n{markdown.strip()}\n{end}\n"
    text = path.read_text(encoding="utf-8") if path.exists() else _TITLE
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.DOTALL)
    found = pattern.search(text)
    text = text[: found.start()] + block + text[found.end() :] if found else text.rstrip("\n") + "\n\n" + block
    path.write_text(text, encoding="utf-8")


@contextlib.contextmanager
def serving(module: str, *args: str, timeout: float = 20.0) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """Run ``python -m module args`` from the repository root for the block, stopped by its PID at the end; it says
    ``port N`` once it listens on 127.0.0.1. Yields its URL and its process. Its stdin is a pipe kept open: a server
    may read it to learn that the benchmark went away."""
    command = [sys.executable, "-m", module, *args]
    root = Path(__file__).resolve().parent.parent
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=root
    )
    try:
        assert process.stdout is not None  # noqa: S101 - stdout=PIPE
        line = process.stdout.readline().strip()
        if not line.startswith("port "):
            raise SystemExit(f"{module} did not start (said {line!r})")
        yield f"http://127.0.0.1:{line.split()[1]}", process
    finally:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)


def serve_here(app: Any, port: int = 0) -> None:
    """The server's end of `serving`: listen on 127.0.0.1:`port` (0: a free one), say ``port N``, and serve the ASGI
    `app` with uvicorn until terminated."""
    import uvicorn  # only the servers need it

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # asyncio sets TCP_NODELAY only then
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)  # connections queue up from now on, before uvicorn starts accepting
    print(f"port {sock.getsockname()[1]}", flush=True)
    # Clients drop idle connections first (httpx: after 5 s), so no request is sent on one the server has just
    # closed: behind the latency proxy, the server's close would reach the client only a one-way delay later.
    config = uvicorn.Config(
        app, log_level="warning", lifespan="off", access_log=False, backlog=1024, timeout_keep_alive=60
    )
    uvicorn.Server(config).run(sockets=[sock])


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process `pid` has used (Linux ``/proc``; 0.0 elsewhere)."""
    stat = Path(f"/proc/{pid}/stat")
    if not stat.exists():
        return 0.0
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
