"""Start and stop a local anvil node by PID, on a free port of 127.0.0.1."""

from __future__ import annotations

import atexit
import ctypes
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import httpx

from x402pay.testing._errors import AnvilNotFound, AnvilStartError

ANVIL_ENV_VAR = "X402PAY_ANVIL"
INSTALL_HINT = (
    "install it with `npm install @foundry-rs/anvil` in your project, or Foundry (https://getfoundry.sh), "
    f"or point {ANVIL_ENV_VAR} at the binary (in a checkout of x402pay itself, `npm ci` installs the pinned one)"
)
_LISTENING = "Listening on "
_PR_SET_PDEATHSIG = 1
_running: dict[int, subprocess.Popen[bytes]] = {}


def find_anvil() -> str:
    """Return the anvil binary: $X402PAY_ANVIL, then PATH, then the nearest node_modules."""
    configured = os.environ.get(ANVIL_ENV_VAR)
    if configured:
        if not (os.path.isfile(configured) and os.access(configured, os.X_OK)):
            raise AnvilNotFound(f"{ANVIL_ENV_VAR}={configured} is not an executable file; {INSTALL_HINT}")
        return configured
    on_path = shutil.which("anvil")
    if on_path:
        return on_path
    for candidate in _node_modules_candidates():
        if os.access(candidate, os.X_OK):
            return str(candidate)
    raise AnvilNotFound(f"anvil was not found; {INSTALL_HINT}")


def _node_modules_candidates() -> list[Path]:
    """Binaries the npm packages put in node_modules, nearest first, from the cwd and from this package."""
    machine = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower(), platform.machine().lower()
    )
    platform_package = f"@foundry-rs/anvil-{sys.platform}-{machine}"
    starts = [Path.cwd(), Path(__file__).resolve().parent]
    candidates: list[Path] = []
    for start in starts:
        for folder in (start, *start.parents):
            modules = folder / "node_modules"
            # The platform package's ELF first: the .bin entry may be a node wrapper that starts slower.
            candidates += [modules / platform_package / "bin" / "anvil", modules / ".bin" / "anvil"]
    return candidates


def _die_with_parent() -> None:
    """In the child: ask Linux to SIGTERM anvil when the Python process that started it dies."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@atexit.register
def _stop_all() -> None:
    for process in list(_running.values()):
        _terminate(process)


def _terminate(process: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    _running.pop(process.pid, None)


class Anvil:
    """A local anvil node on 127.0.0.1, on a port of its own choosing (or `port`), stopped by PID.

    Use it as a context manager; it never outlives the `with` block, the interpreter (atexit), or, on Linux, the
    Python process itself (the child gets SIGTERM when its parent dies, even by SIGKILL)::

        with Anvil() as anvil:
            print(anvil.rpc_url)
    """

    def __init__(
        self,
        *,
        binary: str | None = None,
        chain_id: int = 31337,
        accounts: int = 10,
        port: int = 0,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 20.0,
    ) -> None:
        self.binary = binary
        self.chain_id = chain_id
        self.accounts = accounts
        self.port = port
        self.extra_args = tuple(extra_args)
        self.startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None
        self._port: int | None = None

    def __repr__(self) -> str:
        state = f"pid={self.pid} {self.rpc_url}" if self.running else "stopped"
        return f"<Anvil {state}>"

    @property
    def running(self) -> bool:
        """Whether the anvil process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int:
        """The anvil process id."""
        if self._process is None:
            raise AnvilStartError("anvil has not been started")
        return self._process.pid

    @property
    def rpc_url(self) -> str:
        """The JSON-RPC URL, http://127.0.0.1:<port>."""
        if self._port is None:
            raise AnvilStartError("anvil has not been started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def log_path(self) -> Path:
        """Where anvil's stdout and stderr go while it runs (it logs every RPC method; never an undrained pipe)."""
        if self._log_path is None:
            raise AnvilStartError("anvil has not been started")
        return self._log_path

    def start(self) -> Anvil:
        """Start anvil, read the port it bound, and wait for its first RPC answer."""
        if self._process is not None:
            raise AnvilStartError("this Anvil was already started; create a new one")
        command = [
            self.binary or find_anvil(),
            "--host", "127.0.0.1", "--port", str(self.port),
            "--chain-id", str(self.chain_id), "--accounts", str(self.accounts),
            *self.extra_args,
        ]  # fmt: skip
        descriptor, log_name = tempfile.mkstemp(prefix="x402pay-anvil-", suffix=".log")
        self._log_path = Path(log_name)
        with os.fdopen(descriptor, "wb") as log:
            self._process = subprocess.Popen(  # noqa: S603 - the binary is ours or the user's choice
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,  # only a prctl call: safe between fork and exec
            )  # fmt: skip
        _running[self._process.pid] = self._process
        try:
            deadline = time.monotonic() + self.startup_timeout
            self._port = self._wait_for_port(deadline)
            self._wait_for_rpc(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop anvil by its PID (SIGTERM, then SIGKILL after 5 s) and delete its log; idempotent."""
        if self._process is not None:
            _terminate(self._process)
        if self._log_path is not None:
            self._log_path.unlink(missing_ok=True)

    def __enter__(self) -> Anvil:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _wait_for_port(self, deadline: float) -> int:
        while time.monotonic() < deadline:
            self._check_alive()
            for line in self.log_path.read_text(errors="replace").splitlines():
                if line.startswith(_LISTENING):
                    return int(line.rsplit(":", 1)[1])
            time.sleep(0.01)
        raise AnvilStartError(f"anvil printed no '{_LISTENING}' line within {self.startup_timeout} s")

    def _wait_for_rpc(self, deadline: float) -> None:
        request = {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                answer = httpx.post(self.rpc_url, json=request, timeout=1.0)
                if answer.status_code == 200 and int(answer.json()["result"], 16) == self.chain_id:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.01)
        raise AnvilStartError(f"anvil at {self.rpc_url} did not answer eth_chainId within {self.startup_timeout} s")

    def _check_alive(self) -> None:
        assert self._process is not None  # noqa: S101 - only called after start()
        code = self._process.poll()
        if code is not None:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise AnvilStartError(f"anvil exited with code {code} while starting:\n{tail}")
