"""Interop with the official x402 SDK over MCP, both ways, on anvil.

The official MCP code works with mcp 1.x only (its server imports ``mcp.server.fastmcp``, which mcp 2.x removed),
so it runs in a venv of its own, built here on first use under ``.cache/mcp1`` (pip from the package index) and
reused while its requirements and pyproject.toml stay the same. That venv runs ``mcp1_peer.py``, which reports
what happened as JSON, balances read on chain before and after each call. Without the venv the tests skip, except
under CI, where they fail.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from x402pay.testing import Devnet

pytestmark = pytest.mark.chain

REPO = Path(__file__).resolve().parents[2]
VENV = REPO / ".cache" / "mcp1"
PEER = Path(__file__).with_name("mcp1_peer.py")
REQUIREMENTS = ("mcp>=1.26,<2", "x402[evm,mcp]==2.25.0", "uvicorn>=0.30")
PRICE, PERMIT2_PRICE, UPTO_MAX = 10_000, 15_000, 50_000


def wanted_stamp() -> str:
    pyproject = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()
    return "\n".join([*REQUIREMENTS, f"pyproject {pyproject}"]) + "\n"


def build_venv() -> Path:
    """The mcp 1.x venv's python, built (or rebuilt) when its stamp is not what this checkout needs."""
    python, stamp = VENV / "bin" / "python", VENV / "x402pay-stamp.txt"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted_stamp():
        return python
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True, timeout=120)
    install = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *REQUIREMENTS,
               "-e", str(REPO)]  # fmt: skip
    subprocess.run(install, check=True, timeout=900, capture_output=True)
    stamp.write_text(wanted_stamp())
    return python


@pytest.fixture(scope="session")
def mcp1_python() -> Path:
    try:
        return build_venv()
    except (subprocess.SubprocessError, OSError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        message = f"the mcp 1.x venv for the official SDK could not be built: {exc} {detail.decode()[-2000:]}"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


def peer(python: Path, devnet: Devnet, *argv: str) -> dict[str, Any]:
    config = {"rpc_url": devnet.rpc_url, "network": devnet.network, "usdc": devnet.usdc,
              "payee": devnet.payee.address, "payer": devnet.payers[0].address,
              "payer_key": devnet.payers[0].key.hex(), "facilitator_key": devnet.facilitator.key.hex()}  # fmt: skip
    env = {**os.environ, "X402PAY_TEST_MCP": json.dumps(config)}
    done = subprocess.run([str(python), str(PEER), *argv], capture_output=True, text=True, env=env, timeout=300,
                          check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    facts: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return facts


@pytest.mark.parametrize("transport", ["memory", "http", "sse"])
def test_x402pay_pays_the_official_paid_tools(mcp1_python: Path, x402pay_chain: Devnet, transport: str) -> None:
    facts = peer(mcp1_python, x402pay_chain, "ours-pays-official", transport)

    paid = {"is_error": False, "status": "settled", "verified": True, "tx_status": 1}
    assert facts["get_weather"] == {**paid, "text": "sunny in Paris", "signed": PRICE, "settled": PRICE,
                                    "moved": PRICE, "payer_moved": PRICE}  # fmt: skip
    assert facts["report"] == {**paid, "text": "the report", "signed": PERMIT2_PRICE, "settled": PERMIT2_PRICE,
                               "moved": PERMIT2_PRICE, "payer_moved": PERMIT2_PRICE}  # fmt: skip
    # The official server settles an upto tool's whole maximum: within what was signed, so it is no lie.
    assert facts["summarize"] == {**paid, "text": "7 words", "signed": UPTO_MAX, "settled": UPTO_MAX,
                                  "moved": UPTO_MAX, "payer_moved": UPTO_MAX}  # fmt: skip
    assert facts["ping"] == {"is_error": False, "text": "pong", "moved": 0, "payer_moved": 0}
    assert facts["boom"]["is_error"]
    assert (facts["boom"]["status"], facts["boom"]["moved"], facts["boom"]["payer_moved"]) == ("unsettled", 0, 0)
    assert facts["replay"] == {"is_error": True, "error": "invalid_exact_evm_nonce_already_used", "ran": 0,
                               "moved": 0}  # fmt: skip
    assert facts["above_policy"] == {"outcome": "SpendCapExceeded", "moved": 0}
    assert facts["ran"] == ["get_weather", "report", "summarize", "ping", "boom", "get_weather"]


@pytest.mark.parametrize("transport", ["memory", "http"])
def test_the_official_client_pays_x402pay_paid_tools(mcp1_python: Path, x402pay_chain: Devnet, transport: str) -> None:
    facts = peer(mcp1_python, x402pay_chain, "official-pays-ours", transport)

    unpaid = facts["unpaid"]
    assert unpaid["is_error"]
    assert unpaid["structured"] == unpaid["text"]
    assert unpaid["structured"]["accepts"][0]["amount"] == str(PRICE)
    payer = x402pay_chain.payers[0].address
    assert facts["paid"] == {"is_error": False, "payment_made": True, "text": "sunny in Paris", "success": True,
                             "payer": payer, "tx_status": 1}  # fmt: skip
    assert (facts["moved"], facts["payer_moved"]) == (PRICE, PRICE)
    assert facts["ran"] == ["get_weather"]
