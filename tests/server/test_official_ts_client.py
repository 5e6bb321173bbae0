"""Interoperability: the official TypeScript x402 client (``@x402/fetch`` with ``@x402/evm``, pinned in
package.json) pays the demo API on anvil, through a small script run by node.

Without node or those packages the tests skip, saying what to install; with ``CI`` set they fail instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from server_support import automine_off, balance, mine

from x402pay.server import LocalFacilitator
from x402pay.server._demo import DemoConfig, running_demo
from x402pay.server._demo.app import demo_app
from x402pay.server._serving import serve_app
from x402pay.testing import Devnet

pytestmark = pytest.mark.chain

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("ts") / "pay_with_official_client.mjs"
UNDER_A_DOLLAR = "999999"  # any per-payment cap under 1 USDC

DEMO_CALLS = [
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "stream": True}),
    ("POST", "/api/inference", {"messages": [{"role": "user", "content": "hi"}]}),
    ("POST", "/v1/responses", {"input": "hi"}),
    ("POST", "/v1/responses", {"input": "hi", "stream": True}),
    ("POST", "/v1/messages", {"max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}),
    ("GET", "/v1/fortune", None),
]


@pytest.fixture(scope="module")
def node() -> str:
    found = shutil.which("node")
    missing = None if found else "node (Node.js 20 or later)"
    if found and not (ROOT / "node_modules" / "@x402" / "fetch").is_dir():
        missing = "the official TypeScript client: `make node_modules/.installed` (npm ci)"
    if missing is not None:
        if os.environ.get("CI"):
            pytest.fail(f"the TypeScript interoperability tests need {missing}", pytrace=False)
        pytest.skip(f"needs {missing}")
    assert found is not None
    return found


def pay(node: str, devnet: Devnet, url: str, method: str, body: Any, cap: str = UNDER_A_DOLLAR) -> dict[str, Any]:
    """One request paid by the official TypeScript client: its status, Cache-Control, settlement and text."""
    env = {**os.environ, "PAYER_KEY": "0x" + devnet.payers[0].key.hex(), "NETWORK": devnet.network,
           "ASSET": devnet.usdc, "CAP": cap}  # fmt: skip
    text = json.dumps(body) if body is not None else ""
    done = subprocess.run(
        [node, str(SCRIPT), url, method, text], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


@pytest.mark.parametrize(
    ("method", "path", "body"), DEMO_CALLS,
    ids=["chat", "chat-stream", "inference", "responses", "responses-stream", "messages", "fortune"],
)  # fmt: skip
def test_the_official_ts_client_with_a_cap_under_1_usdc_pays_every_demo_route(
    node: str, x402pay_chain: Devnet, method: str, path: str, body: Any
) -> None:
    devnet = x402pay_chain
    before = balance(devnet, devnet.payers[0].address)
    with running_demo(devnet) as url:  # the demo as it is, Permit2 gas sponsoring offered
        answer = pay(node, devnet, url + path, method, body)
    assert answer["status"] == 200, answer
    assert answer["cacheControl"] == "private"
    if answer["settlement"] is None:  # a stream: the receipt is in-band
        assert '"settlementStatus":"settled"' in answer["text"]
    else:
        assert answer["settlement"]["success"] is True
    paid = before - balance(devnet, devnet.payers[0].address)
    assert 0 < paid <= DemoConfig().upto_max < 1_000_000


@pytest.fixture
def slow_demo(x402pay_chain: Devnet, tmp_path: Path) -> Iterator[tuple[str, LocalFacilitator]]:
    devnet = x402pay_chain
    facilitator = LocalFacilitator(
        devnet.rpc_url, devnet.facilitator, receipt_timeout=1.0, settlements=tmp_path / "settlements.sqlite3"
    )
    app = demo_app(facilitator=facilitator, network=devnet.network, asset=devnet.usdc, pay_to=devnet.payee.address)
    with serve_app(app) as url:
        yield url, facilitator
    facilitator.settlements.close()


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [("GET", "/v1/fortune", None), ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]})],
    ids=["exact", "upto"],
)
def test_the_official_ts_client_is_told_settlement_pending_with_the_hash(
    node: str, x402pay_chain: Devnet, slow_demo: tuple[str, LocalFacilitator], method: str, path: str, body: Any
) -> None:
    devnet, (url, facilitator) = x402pay_chain, slow_demo
    before = balance(devnet, devnet.payers[0].address)
    with automine_off(devnet):
        answer = pay(node, devnet, url + path, method, body)
        (broadcast,) = facilitator.settlements.pending()
        assert answer["status"] == 402
        assert answer["settlement"]["errorReason"] == "settlement_pending"
        assert answer["settlement"]["transaction"] == broadcast.tx_hash
        mine(devnet)
    assert facilitator.reconcile()[0].state == "settled"
    charged = before - balance(devnet, devnet.payers[0].address)
    assert charged == broadcast.amount == facilitator.settlements.settled_total(devnet.payers[0].address)
