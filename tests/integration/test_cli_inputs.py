"""Every bad input to the x402pay command: one line on stderr, the documented exit code, no traceback, no file.

Each case runs in fresh XDG dirs under a temporary HOME; the file tree is compared before and after.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from x402pay.cli import main

TX = "0x" + "ab" * 32
ADDRESS = "0x" + "12" * 20
CLOSED = "http://127.0.0.1:9/"


@pytest.fixture
def home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in list(os.environ):
        if name.startswith("X402PAY_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("X402PAY_PRIVATE_KEY", "0x" + "7c" * 32)
    return tmp_path


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A loopback socket that accepts connections and never answers."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


def tree(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() if path.is_file() else b"" for path in root.rglob("*")}


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


BAD_INPUTS = [
    ("max not a number", ["pay", "--max", "abc", CLOSED], 2),
    ("max with an exponent beyond any uint", ["pay", "--max", "1e400", CLOSED], 2),
    ("max too large", ["pay", "--max", "9" * 30, CLOSED], 2),
    ("max finer than one atomic unit", ["pay", "--max", "0.0000001", CLOSED], 2),
    ("max negative", ["pay", "--max=-1", CLOSED], 2),
    ("max zero", ["pay", "--max", "0", CLOSED], 2),
    ("max NaN", ["pay", "--max", "NaN", CLOSED], 2),
    ("max infinite", ["pay", "--max", "inf", CLOSED], 2),
    ("network not CAIP-2", ["pay", "--network", "foo", CLOSED], 2),
    ("network not EVM", ["pay", "--network", "foo:bar", CLOSED], 2),
    ("network as a v1 name", ["pay", "--network", "base", CLOSED], 2),
    ("asset not an address", ["pay", "--asset", "usdc", CLOSED], 2),
    ("URL malformed", ["pay", "http://[::1"], 2),
    ("URL without a scheme", ["pay", "example.com/x"], 2),
    ("URL of another scheme", ["pay", "ftp://example.com/"], 2),
    ("header without a colon", ["pay", "-H", "no colon", CLOSED], 2),
    ("timeout not a number", ["pay", "--timeout", "abc", CLOSED], 2),
    ("timeout negative", ["pay", "--timeout=-5", CLOSED], 2),
    ("no URL", ["pay"], 2),
    ("no command", [], 2),
    ("unknown command", ["payy"], 2),
    ("unknown flag", ["ledger", "--bogus"], 2),
    ("ledger budget not a number", ["ledger", "--budget", "abc"], 2),
    ("budget window unknown", ["budget", "--budget", "1", "--window", "week"], 2),
    ("ledger limit not positive", ["ledger", "--limit", "0"], 2),
    ("ledger in a directory that does not exist", ["ledger", "--ledger", "{tmp}/nonexist/dir/l.db"], 2),
    ("budget of a ledger in a missing directory", ["budget", "--ledger", "{tmp}/nonexist/l.db"], 2),
    ("verify amount not a number", ["verify", TX, "--payer", ADDRESS, "--to", ADDRESS, "--amount", "abc"], 2),
    ("verify payer not an address", ["verify", TX, "--payer", "0x12", "--to", ADDRESS, "--amount", "1"], 2),
    ("verify hash malformed", ["verify", "0x12", "--payer", ADDRESS, "--to", ADDRESS, "--amount", "1"], 2),
    ("verify without an RPC URL", ["verify", TX, "--payer", ADDRESS, "--to", ADDRESS, "--amount", "1"], 2),
    ("approve amount not a number", ["wallet", "approve-permit2", "--amount", "abc", "--rpc-url", CLOSED], 2),
    ("approve amount in atomic units by mistake", ["wallet", "approve-permit2", "--amount", "1e6"], 2),
    ("rpc URL not http", ["wallet", "balance", "--rpc-url", "localhost:8545"], 2),
    ("trust reset without an origin", ["trust", "reset"], 2),
    ("trust reset of a URL with a path", ["trust", "reset", "https://liar.example/v1/chat"], 2),
    ("serve-demo port out of range", ["serve-demo", "--port", "70000"], 2),
    ("chain refuses the connection", ["wallet", "balance", "--rpc-url", CLOSED], 1),
    ("server refuses the connection", ["pay", CLOSED], 1),
]


@pytest.mark.parametrize(("argv", "code"), [case[1:] for case in BAD_INPUTS], ids=[case[0] for case in BAD_INPUTS])
def test_a_bad_input_is_one_line_and_its_exit_code(
    home: Path, capsys: pytest.CaptureFixture[str], argv: list[str], code: int
) -> None:
    argv = [arg.replace("{tmp}", str(home)) for arg in argv]
    before = tree(home) if argv[:1] != ["pay"] or code == 2 else None
    assert main(argv) == code
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("x402pay")
    assert "Traceback" not in err
    assert "<class" not in err
    if before is not None:
        assert tree(home) == before


def test_a_corrupt_trust_file_is_one_line_and_exit_1(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(home / "state" / "x402pay" / "untrusted.json", "{not json")
    before = tree(home)
    assert main(["trust", "list"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "untrusted.json cannot be read" in err
    assert tree(home) == before


def test_an_unknown_config_key_is_named_with_the_known_ones(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(home / "config" / "x402pay" / "config.toml", 'max = "0.01"\nbugdet = "5"\n')
    assert main(["budget"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "unknown key 'bugdet'" in err
    assert "budget, " in err
    assert "max" in err


def test_a_bad_amount_in_the_config_names_where_it_is(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(home / "config" / "x402pay" / "config.toml", 'budget = "lots"\n')
    assert main(["budget"]) == 2
    assert "budget in " + str(home / "config" / "x402pay" / "config.toml") in capsys.readouterr().err


def test_serve_demo_on_a_busy_port_exits_1_naming_the_port(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("uvicorn")
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        assert main(["serve-demo", "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"127.0.0.1:{port}" in err


def test_timeout_against_an_rpc_that_never_answers(
    home: Path, silent_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    assert main(["wallet", "balance", "--rpc-url", silent_server, "--timeout", "1"]) == 1
    assert time.monotonic() - started < 5
    err = capsys.readouterr().err
    assert err == f"x402pay: reading the balances: the chain at {silent_server} did not answer within 1 s\n"


def test_timeout_against_a_server_that_never_answers(
    home: Path, silent_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    assert main(["pay", silent_server + "/v1/x", "--timeout", "1"]) == 1
    assert time.monotonic() - started < 5
    assert capsys.readouterr().err == f"x402pay: {silent_server} did not answer within 1 s\n"


def cli(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "x402pay", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def test_ctrl_c_exits_130_in_one_line(home: Path, silent_server: str) -> None:
    process = cli("pay", silent_server, env=dict(os.environ))
    try:
        time.sleep(2.0)  # past the imports, waiting on the server
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130
    assert err == "x402pay: interrupted\n"


def test_a_reader_that_goes_away_ends_the_command_quietly(home: Path) -> None:
    marks = {f"https://liar{number}.example": {"reason": "forged", "marked_at": 0} for number in range(20_000)}
    write(home / "state" / "x402pay" / "untrusted.json", json.dumps(marks))
    process = cli("trust", "list", env=dict(os.environ))
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith("https://liar")
        process.stdout.close()  # like `| head -1`
        process.wait(timeout=30)
        assert process.stderr is not None
        err = process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 1
    assert err == ""


def test_read_only_commands_create_nothing(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["ledger"], ["budget"], ["trust", "list"], ["trust", "reset", "https://Liar.example/"]):
        assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"no payments recorded yet at {home / 'state' / 'x402pay' / 'ledger.db'}" in out
    assert f"no budgets configured: set budget (and window, asset) in {home / 'config' / 'x402pay'}" in out
    assert "https://liar.example was not marked; nothing changed" in out
    assert tree(home) == {}


def test_trust_reset_normalizes_the_origin(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from x402pay._trust import TrustStore

    store = TrustStore(home / "state" / "x402pay" / "untrusted.json")
    store.mark("https://liar.example:8443", "forged receipt")
    assert main(["trust", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"https://liar.example:8443": "forged receipt"}
    assert main(["trust", "reset", "HTTPS://Liar.Example:8443/"]) == 0
    assert capsys.readouterr().out == "https://liar.example:8443: trusted again\n"
    assert store.marks() == {}


def test_xdg_config_budget_is_shown_and_x402pay_config_wins(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(home / "config" / "x402pay" / "config.toml", 'budget = "2.5"\nwindow = "day"\n')
    assert main(["budget", "--json"]) == 0
    (status,) = json.loads(capsys.readouterr().out)
    assert (status["limit"], status["window"], status["held"]) == (2_500_000, 86_400, 0)
    write(home / "elsewhere.toml", 'budget = "1"\n')
    os.environ["X402PAY_CONFIG"] = str(home / "elsewhere.toml")
    try:
        assert main(["ledger", "--json"]) == 0
    finally:
        del os.environ["X402PAY_CONFIG"]
    shown = json.loads(capsys.readouterr().out)
    assert shown["entries"] == []
    assert [budget["limit"] for budget in shown["budgets"]] == [1_000_000]


def test_relative_xdg_dirs_are_ignored(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from x402pay.cli.config import config_path, state_dir

    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/config")
    monkeypatch.delenv("XDG_STATE_HOME")
    assert config_path() == home / ".config" / "x402pay" / "config.toml"
    assert state_dir() == home / ".local" / "state" / "x402pay"


@pytest.mark.parametrize(
    ("text", "atomic"), [("0.05", 50_000), ("1", 1_000_000), (".5", 500_000), ("2.", 2_000_000), ("0.1000000", 100_000)]
)
def test_amounts_people_type(text: str, atomic: int) -> None:
    from x402pay.cli.common import parse_usdc

    assert parse_usdc(text, "--max") == atomic


def test_unlimited_allowance_reads_unlimited() -> None:
    from x402pay.cli.common import usdc_text

    assert usdc_text(2**256 - 1) == "unlimited"
    assert usdc_text(2**160 - 1) == "unlimited"
    assert usdc_text(1_500_000) == "1.500000"


def test_every_command_and_flag_has_help() -> None:
    import argparse

    from x402pay.cli import _parser

    def parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in action.choices.values():
                    yield from parsers(child)

    missing = [
        f"{parser.prog} {action.dest}"
        for parser in parsers(_parser())
        for action in parser._actions
        if not action.help and not isinstance(action, argparse._SubParsersAction)
    ]
    assert missing == []


def test_the_readme_config_example_is_a_valid_config(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import re

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    (example,) = re.findall(r"```toml\n(.*?)```", readme, flags=re.DOTALL)
    write(home / "config" / "x402pay" / "config.toml", example)
    assert main(["budget", "--json"]) == 0
    (status,) = json.loads(capsys.readouterr().out)
    assert (status["limit"], status["window"]) == (5_000_000, 86_400)
