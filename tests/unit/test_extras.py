"""A command whose extra (or anvil) is missing says what to install in one line on stderr, and exits 1."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

#: Runs the command line with some modules made unimportable, as if their extra were not installed.
WITHOUT = """
import sys

for name in filter(None, sys.argv[1].split(",")):
    sys.modules[name] = None
from x402pay.cli import main

sys.exit(main(sys.argv[2:]))
"""


def run_without(missing: str, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", WITHOUT, missing, *argv]
    environment = {**os.environ, **env}
    return subprocess.run(command, capture_output=True, text=True, env=environment, timeout=60, check=False)


@pytest.mark.parametrize(
    ("missing", "argv", "message"),
    [
        ("starlette", ["serve-demo"], "x402pay: serve-demo needs starlette: pip install 'x402pay[server]'\n"),
        ("uvicorn", ["serve-demo", "--rpc-url", "http://127.0.0.1:9"], "needs uvicorn: pip install 'x402pay[server]'"),
        ("httpx2,openai", ["demo"], "x402pay: demo needs httpx2, openai: pip install 'x402pay[demo]'\n"),
    ],
    ids=["serve-demo", "serve-demo-on-a-chain", "demo"],
)
def test_a_command_without_its_extra_names_the_extra_in_one_line(missing: str, argv: list[str], message: str) -> None:
    result = run_without(missing, *argv)
    assert result.returncode == 1
    assert message in result.stderr
    assert result.stderr.count("\n") == 1
    assert result.stdout == ""


def test_the_demo_without_anvil_says_so_before_starting_anything(tmp_path: os.PathLike[str]) -> None:
    result = run_without("", "demo", X402PAY_ANVIL=str(tmp_path))  # a directory: not an executable file
    assert result.returncode == 1
    assert result.stderr.startswith(f"x402pay: X402PAY_ANVIL={tmp_path} is not an executable file; install it with")
    assert result.stderr.count("\n") == 1
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("missing", "package", "message"),
    [
        ("starlette", "server", "x402pay.server needs starlette: pip install 'x402pay[server]'"),
        ("mcp", "mcp", "x402pay.mcp needs mcp: pip install 'x402pay[mcp]'"),
    ],
)
def test_importing_a_package_without_its_extra_is_an_import_error_naming_it(
    missing: str, package: str, message: str
) -> None:
    probe = f"""
import sys
sys.modules["{missing}"] = None
try:
    import x402pay.{package}
except ImportError as exc:
    from x402pay import MissingExtra
    print(type(exc).__name__, isinstance(exc, MissingExtra), exc)
"""
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False)
    assert result.stdout == f"MissingExtra True {message}\n"
