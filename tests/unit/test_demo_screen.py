"""The demo's progress lines say what happened: ok for a step that finished, failed for one that raised."""

from __future__ import annotations

import io

import pytest

from x402pay.cli.demo_cmd import Screen


def test_a_step_that_finishes_is_ok_and_one_that_raises_is_failed() -> None:
    out = io.StringIO()
    screen = Screen(out)
    with screen.waiting("deploying the contracts"):
        pass
    with pytest.raises(RuntimeError), screen.waiting("starting a local chain"):
        raise RuntimeError("anvil exited")
    lines = out.getvalue().splitlines()
    assert lines[0] == "... deploying the contracts"
    assert lines[1].startswith("ok deploying the contracts (")
    assert lines[2] == "... starting a local chain"
    assert lines[3].startswith("failed starting a local chain (")
