"""The Anvil process manager: starts on a free port, answers RPC, never outlives its owner."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from x402pay.testing import Anvil, AnvilNotFound, AnvilStartError, find_anvil

pytestmark = pytest.mark.chain


@pytest.fixture(autouse=True)
def _needs_anvil() -> None:
    try:
        find_anvil()
    except AnvilNotFound as exc:
        if os.environ.get("CI"):
            pytest.fail(str(exc))
        pytest.skip(str(exc))


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def wait_until_gone(pid: int, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


def chain_id(rpc_url: str) -> int:
    answer = httpx.post(rpc_url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []})
    return int(answer.json()["result"], 16)


def test_starts_on_a_free_port_answers_and_stops_by_pid() -> None:
    with Anvil(chain_id=4242) as anvil:
        pid = anvil.pid
        assert anvil.running
        assert anvil.rpc_url.startswith("http://127.0.0.1:")
        assert chain_id(anvil.rpc_url) == 4242
        log = anvil.log_path
    assert not alive(pid)
    assert not anvil.running
    assert not log.exists()


def test_two_nodes_run_side_by_side_on_different_ports() -> None:
    with Anvil() as first, Anvil() as second:
        assert first.rpc_url != second.rpc_url
        assert chain_id(first.rpc_url) == chain_id(second.rpc_url) == 31337


def test_stops_when_the_with_block_raises() -> None:
    anvil = Anvil()

    def fail_inside() -> None:
        with anvil:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail_inside()
    assert not alive(anvil.pid)


def test_stop_is_idempotent_and_a_node_starts_once() -> None:
    anvil = Anvil().start()
    anvil.stop()
    anvil.stop()
    with pytest.raises(AnvilStartError, match="already started"):
        anvil.start()


def test_dies_with_the_python_process_that_started_it_even_on_sigkill() -> None:
    script = textwrap.dedent(
        """
        import sys, time
        from x402pay.testing import Anvil
        anvil = Anvil().start()
        print(anvil.pid, flush=True)
        time.sleep(60)
        """
    )
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        anvil_pid = int(owner.stdout.readline())
        assert alive(anvil_pid)
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        assert wait_until_gone(anvil_pid), f"anvil {anvil_pid} outlived its SIGKILLed owner"
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()


def test_a_binary_that_exits_at_once_gives_a_start_error_with_its_output(tmp_path: Path) -> None:
    fake = tmp_path / "anvil"
    fake.write_text("#!/bin/sh\necho 'cannot bind' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(AnvilStartError, match=r"exited with code 3(.|\n)*cannot bind"):
        Anvil(binary=str(fake)).start()


def test_env_var_pointing_nowhere_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X402PAY_ANVIL", "/nonexistent/anvil")
    with pytest.raises(AnvilNotFound, match="npm ci"):
        find_anvil()


def test_env_var_takes_precedence_over_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    chosen = tmp_path / "my-anvil"
    chosen.write_text("#!/bin/sh\n")
    chosen.chmod(0o755)
    monkeypatch.setenv("X402PAY_ANVIL", str(chosen))
    assert find_anvil() == str(chosen)


def test_falls_back_to_node_modules_when_not_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("X402PAY_ANVIL", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    found = find_anvil()
    assert "node_modules" in found
    assert os.access(found, os.X_OK)
