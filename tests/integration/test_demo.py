"""`x402pay demo`, the main job: runs to completion, every payment verified, the budget's refusal shown."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.chain


def test_the_demo_runs_to_completion_and_leaves_nothing_running() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "x402pay", "demo"], capture_output=True, text=True, timeout=120, check=False
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "\x1b[" not in out  # not a terminal: plain lines only
    rows = [line for line in out.splitlines() if line[:2].strip().isdigit()]
    assert len(rows) >= 5
    assert all("verified" in row for row in rows)
    assert any("upto" in row and "chat.completions stream" in row for row in rows)
    assert any("exact" in row for row in rows)
    assert any("mcp tool fortune" in row and "exact" in row for row in rows)  # the agent's paid tool call
    refused = r"refused           budget .* has 0\.\d{6} of 0\.100000 USDC left, 0\.\d{6} asked"
    assert re.search(refused, out)  # at its reservation, in USDC
    # a run of calls paid through one channel deposit, the payer's book checked against the chain
    assert "payment channel: 5 calls of GET /v1/fortune/channel, one deposit" in out
    assert re.search(r"deposit +0\.010000 USDC into escrow, tx 0x[0-9a-f]{12} \(one, for all 5 calls\)", out)
    assert "vouchers       5 signed off chain, no transaction each; charged 0.005000 USDC" in out
    assert "escrow left    0.005000 USDC" in out
    assert "channels(id): balance 0.010000, claimed 0.000000 USDC; the book agrees: verified" in out
    assert "channel calls     5 (1 deposit, verified)" in out
    # the whole deposit is held by the budget (escrow), so the budget runs out 0.01 USDC earlier
    assert re.search(r"budget left +0\.000550 USDC", out)
    assert "demo finished: every payment verified, and the budget held." in out
