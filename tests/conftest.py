"""Suite-wide checks (no anvil started by this test run may outlive it) and fixtures."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # the chain kit is imported by the chain tests only
    from x402pay.testing import Anvil, Devnet

pytest_plugins = ["pytester"]

IDLE_SECONDS = 3600


@pytest.fixture
def idle_chain(x402pay_anvil: Anvil) -> Iterator[Devnet]:
    """A devnet on an anvil of its own whose latest block is an hour old and whose clock is the present, as after an
    hour in which nobody paid (automine makes no block while idle). (`x402pay_anvil` makes a missing anvil skip or
    fail as the other chain tests do.)"""
    from x402pay.testing import Anvil, deploy_devnet

    with Anvil(binary=x402pay_anvil.binary, extra_args=["--timestamp", str(int(time.time()) - IDLE_SECONDS)]) as anvil:
        devnet = deploy_devnet(anvil.rpc_url, payers=1)
        devnet.web3().provider.make_request("evm_setTime", [int(time.time())])  # type: ignore[arg-type]
        assert devnet.chain_time() < time.time() - IDLE_SECONDS + 60
        yield devnet


def anvil_children(parent: int) -> list[int]:
    """PIDs of live (non-zombie) anvil processes whose parent is `parent`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        state, ppid = text[text.rindex(")") + 2 :].split()[:2]
        if name == "anvil" and int(ppid) == parent and state != "Z":
            found.append(int(stat.parent.name))
    return found


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    leftovers = anvil_children(os.getpid())
    if leftovers:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_sep("=", f"FAILED: anvil processes left running after the suite: {leftovers}", red=True)
