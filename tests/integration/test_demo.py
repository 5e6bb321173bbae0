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
    assert "demo finished: every payment verified, and the budget held." in out
