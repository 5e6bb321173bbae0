"""Suite-wide checks: no anvil started by this test run may outlive it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]


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
