"""`x402pay devnet`: brings up a working devnet, prints what a user needs, stops cleanly on Ctrl-C."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.chain


def rpc(url: str, method: str, *params: object) -> object:
    answer = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})
    return answer.json()["result"]


def read_until_ready(process: subprocess.Popen[str], seconds: float = 60.0) -> list[str]:
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if line.startswith("devnet ready"):
            return lines
    pytest.fail(f"no 'devnet ready' line; output so far: {lines}")


def anvil_children(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in children if Path(f"/proc/{child}/comm").read_text().strip() == "anvil"]


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return int(probe.getsockname()[1])


def test_devnet_command_serves_a_working_chain_until_ctrl_c() -> None:
    port = free_port()
    command = [sys.executable, "-m", "x402pay", "devnet", "--payers", "1", "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = read_until_ready(process)
        fields = {line.split()[0]: line for line in lines}
        rpc_url = next(line.split()[-1] for line in lines if line.startswith("RPC URL"))
        assert rpc_url == f"http://127.0.0.1:{port}"
        assert rpc(rpc_url, "eth_chainId") == "0x7a69"
        permit2 = "0x000000000022D473030F116dDEE9F6B43aC78BA3"
        assert permit2 in fields["Permit2"]
        assert len(str(rpc(rpc_url, "eth_getCode", permit2, "latest"))) > 100
        assert any("payer 1" in line and " key 0x" in line for line in lines)
        anvils = anvil_children(process.pid)
        assert len(anvils) == 1
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=15) == 0
        assert not Path(f"/proc/{anvils[0]}").exists() or "Z" in Path(f"/proc/{anvils[0]}/stat").read_text().split()[2]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_devnet_command_rejects_too_many_payers() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "x402pay", "devnet", "--payers", "9"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert "--payers" in result.stderr


def test_serve_demo_serves_the_paid_api_on_its_own_devnet_until_ctrl_c() -> None:
    command = [sys.executable, "-m", "x402pay", "serve-demo", "--port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout is not None
        url = None
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            if "Uvicorn running on" in line:
                url = line.split("Uvicorn running on ")[1].split()[0]
        assert url is not None, "serve-demo never said where it listens"
        assert httpx.get(url + "/v1/models").json()["data"][0]["id"]
        challenge = httpx.get(url + "/v1/fortune")
        assert challenge.status_code == 402
        assert "payment-required" in challenge.headers
        anvils = anvil_children(process.pid)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
        assert all(not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
                   for pid in anvils)  # fmt: skip
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
