"""`x402pay devnet`: brings up a working devnet, prints what a user needs, stops cleanly on Ctrl-C."""

from __future__ import annotations

import base64
import json
import os
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


def test_devnet_command_serves_a_working_chain_until_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    command = [sys.executable, "-m", "x402pay", "devnet", "--payers", "1", "--port", str(port)]
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path)}  # its record goes to the test's state dir
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
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


def test_serve_demo_serves_the_paid_api_on_its_own_devnet_until_ctrl_c(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "x402pay", "serve-demo", "--port", "0", "--upto-max", "0.25"]
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path)}  # no running devnet recorded: it starts its own
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
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
        metered = httpx.post(url + "/v1/chat/completions", json={"messages": []})
        assert json.loads(base64.b64decode(metered.headers["payment-required"]))["accepts"][0]["amount"] == "250000"
        assert (tmp_path / "x402pay" / "demo-settlements.sqlite3").is_file()  # what it broadcasts outlives it
        anvils = anvil_children(process.pid)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
        assert all(not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
                   for pid in anvils)  # fmt: skip
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def wait_for_uvicorn(process: subprocess.Popen[str], seconds: float = 60.0) -> tuple[str, list[str]]:
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        lines.append(line.rstrip("\n"))
        if "Uvicorn running on" in line:
            return line.split("Uvicorn running on ")[1].split()[0], lines
    pytest.fail(f"serve-demo never said where it listens; output: {lines}")


def stop(process: subprocess.Popen[str]) -> int:
    process.send_signal(signal.SIGINT)
    return process.wait(timeout=20)


def test_serve_demo_and_fund_find_the_running_devnet_by_themselves(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state"), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    record = tmp_path / "state" / "x402pay" / "devnet.json"
    command = [sys.executable, "-m", "x402pay"]
    devnet = subprocess.Popen([*command, "devnet", "--payers", "1", "--port", str(free_port())], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    demo: subprocess.Popen[str] | None = None
    try:
        lines = read_until_ready(devnet)
        rpc_url = next(line.split()[-1] for line in lines if line.startswith("RPC URL"))
        usdc = next(line.split()[-1] for line in lines if line.startswith("USDC"))
        assert "key" not in record.read_text()  # the record names the chain and token, never a key
        newcomer = "0x" + "5e" * 20
        funded = subprocess.run([*command, "fund", newcomer, "--usdc", "2.5"], env=env, capture_output=True,
                                text=True, check=False)  # fmt: skip
        assert funded.returncode == 0, funded.stderr
        balance_of = "0x70a08231" + newcomer[2:].rjust(64, "0")
        assert int(str(rpc(rpc_url, "eth_call", {"to": usdc, "data": balance_of}, "latest")), 16) == 2_500_000
        assert int(str(rpc(rpc_url, "eth_getBalance", newcomer, "latest")), 16) == 10**18
        demo = subprocess.Popen([*command, "serve-demo", "--port", "0"], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)  # fmt: skip
        url, said = wait_for_uvicorn(demo)
        assert any(f"serving on the running devnet at {rpc_url}" in line for line in said)
        assert anvil_children(demo.pid) == []  # attached: no chain of its own
        challenge = httpx.get(url + "/v1/fortune")
        assert challenge.status_code == 402
        assert usdc.lower() in base64.b64decode(challenge.headers["payment-required"]).decode().lower()
        assert stop(demo) == 0
        assert stop(devnet) == 0
        assert not record.exists()  # a stopped devnet leaves no record behind
        gone = subprocess.run([*command, "fund", newcomer], env=env, capture_output=True, text=True, check=False)
        assert (gone.returncode, gone.stderr.count("\n")) == (1, 1)
        assert "no devnet is running" in gone.stderr
    finally:
        for process in (demo, devnet):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
