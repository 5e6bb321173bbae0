"""The x402pay command on the devnet: wallet new/address/balance/approve-permit2, pay, exit codes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from x402pay._protocol.addresses import PERMIT2_ADDRESS
from x402pay.cli import main
from x402pay.server._demo import running_demo
from x402pay.testing import Devnet

pytestmark = pytest.mark.chain


@pytest.fixture(scope="module")
def demo_url(x402pay_devnet: Devnet) -> Iterator[str]:
    with running_demo(x402pay_devnet) as url:
        yield url


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("X402PAY_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return monkeypatch


def test_wallet_new_then_address_round_trip(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keystore = tmp_path / "keys" / "bot.json"
    clean_env.setenv("X402PAY_KEYSTORE_PASSWORD", "correct horse")

    assert main(["wallet", "new", "--keystore", str(keystore)]) == 0
    created = capsys.readouterr().out.strip()

    assert stat.S_IMODE(keystore.stat().st_mode) == 0o600
    assert "crypto" in json.loads(keystore.read_text())
    assert main(["wallet", "address", "--keystore", str(keystore)]) == 0
    assert capsys.readouterr().out.strip() == created
    clean_env.setenv("X402PAY_KEYSTORE", str(keystore))  # from the env this time, decrypting with the password
    clean_env.setenv("X402PAY_KEYSTORE_PASSWORD", "correct horse")
    assert main(["wallet", "balance", "--rpc-url", "http://127.0.0.1:9"]) == 1  # no chain there: a clean failure
    assert main(["wallet", "new", "--keystore", str(keystore)]) == 2  # never overwrites
    assert "refusing to overwrite" in capsys.readouterr().err


def test_wallet_with_a_wrong_password_fails_without_echoing_it(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keystore = tmp_path / "bot.json"
    clean_env.setenv("X402PAY_KEYSTORE_PASSWORD", "right")
    assert main(["wallet", "new", "--keystore", str(keystore)]) == 0
    clean_env.setenv("X402PAY_KEYSTORE_PASSWORD", "wrong-password-xyz")
    keystore.write_text(json.dumps({k: v for k, v in json.loads(keystore.read_text()).items() if k != "address"}))
    assert main(["wallet", "address", "--keystore", str(keystore)]) == 1
    error = capsys.readouterr().err
    assert "wrong password" in error
    assert "wrong-password-xyz" not in error


def test_wallet_balance_and_approve_permit2(
    x402pay_chain: Devnet, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    key = "0x" + "7c" * 32
    clean_env.setenv("X402PAY_PRIVATE_KEY", key)
    clean_env.setenv("X402PAY_RPC_URL", x402pay_chain.rpc_url)
    assert main(["wallet", "address"]) == 0
    address = capsys.readouterr().out.strip()
    web3 = x402pay_chain.web3()
    web3.provider.make_request("anvil_setBalance", [address, hex(10**18)])  # type: ignore[arg-type]
    usdc = x402pay_chain.contract("TestUSDC", x402pay_chain.usdc)
    usdc.functions.mint(address, 2_500_000).transact({"from": x402pay_chain.deployer.address})

    assert main(["wallet", "balance"]) == 0
    shown = capsys.readouterr().out
    assert "balance     2.500000" in shown
    assert "Permit2     0.000000 allowed" in shown
    assert main(["wallet", "approve-permit2", "--amount", "0.7"]) == 0
    assert capsys.readouterr().out.strip().startswith("0x")
    assert usdc.functions.allowance(address, PERMIT2_ADDRESS).call() == 700_000


def pay(*args: str, key: str, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    """`x402pay pay` in a subprocess, with the XDG dirs of the test (the clean_env fixture)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("X402PAY_")}
    env.update(X402PAY_PRIVATE_KEY=key)
    command = [sys.executable, "-m", "x402pay", "pay", *args]
    return subprocess.run(command, capture_output=True, env=env, timeout=timeout, check=False)


def test_pay_an_exact_priced_route(x402pay_chain: Devnet, demo_url: str) -> None:
    payer = x402pay_chain.payers[1]
    result = pay(demo_url + "/v1/fortune", "--max", "0.05", key="0x" + payer.key.hex())
    assert result.returncode == 0, result.stderr
    assert b"fortune" in json.loads(result.stdout) or json.loads(result.stdout)
    summary = result.stderr.decode()
    assert "exact payment settled" in summary
    assert "charged 0.010000 of max 0.010000" in summary


def test_pay_a_streamed_chat_with_data_and_headers(x402pay_chain: Devnet, demo_url: str) -> None:
    payer = x402pay_chain.payers[1]
    body = json.dumps({"model": "demo", "stream": True, "messages": [{"role": "user", "content": "stream me"}]})
    result = pay(
        demo_url + "/v1/chat/completions", "-d", body, "-H", "Content-Type: application/json",
        "--max", "0.2", key="0x" + payer.key.hex(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    assert "chat.completion.chunk" in out
    assert out.rstrip().endswith("data: [DONE]")
    assert "compose.receipt" not in out
    assert "upto payment settled" in result.stderr.decode()


def test_pay_refused_by_the_cap_exits_4_and_pays_nothing(x402pay_chain: Devnet, demo_url: str) -> None:
    payer = x402pay_chain.payers[1]
    usdc = x402pay_chain.contract("TestUSDC", x402pay_chain.usdc)
    before = usdc.functions.balanceOf(payer.address).call()
    result = pay(demo_url + "/v1/fortune", "--max", "0.001", key="0x" + payer.key.hex())
    assert result.returncode == 4
    assert b"refused to pay" in result.stderr
    assert usdc.functions.balanceOf(payer.address).call() == before


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pay", "http://127.0.0.1:9/", "-H", "no colon"]) == 2
    assert main(["pay", "http://127.0.0.1:9/", "--network", "base"]) == 2  # a v1 name, not CAIP-2
    assert main([]) == 2


def test_pay_with_a_budget_then_ledger_budget_and_reconcile(
    x402pay_chain: Devnet, demo_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    payer = x402pay_chain.payers[1]
    ledger = str(tmp_path / "spend.db")
    books = ["--ledger", ledger, "--budget", "0.015", "--asset", x402pay_chain.usdc]
    first = pay(demo_url + "/v1/fortune", *books, key="0x" + payer.key.hex())
    second = pay(demo_url + "/v1/fortune", *books, key="0x" + payer.key.hex())
    assert first.returncode == 0, first.stderr
    assert second.returncode == 4  # 0.010 held, 0.005 left: the budget refuses before signing
    assert b"0.010000" in first.stderr

    assert main(["ledger", *books]) == 0
    table = capsys.readouterr().out
    assert "settled" in table
    assert demo_url.lower() in table.lower()
    assert main(["budget", *books, "--json"]) == 0
    (status,) = json.loads(capsys.readouterr().out)
    assert (status["held"], status["remaining"]) == (10_000, 5_000)
    assert main(["reconcile", *books, "--rpc-url", x402pay_chain.rpc_url]) == 0


def test_a_budget_without_an_asset_counts_usdc_on_every_chain(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    books = ["--ledger", str(tmp_path / "spend.db"), "--budget", "5", "--window", "day"]
    assert main(["budget", *books, "--json"]) == 0
    (status,) = json.loads(capsys.readouterr().out)
    assert (status["asset"], status["budget"], status["limit"]) == ("USDC", "[USDC per day]", 5_000_000)
    assert "eip155:8453/erc20:0x833589fcd6edb6e08f4c7c32d4f71b54bda02913" in status["covers"]
    assert main(["budget", *books]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:5] == ["[USDC", "per", "day]", "(all)", "0.000000"]


def test_verify_one_settlement_and_a_lie(
    x402pay_chain: Devnet, demo_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    payer = x402pay_chain.payers[1]
    result = pay(demo_url + "/v1/fortune", key="0x" + payer.key.hex())
    tx = result.stderr.decode().split("tx ")[1].split(";")[0].strip()
    common = ["--payer", payer.address, "--to", x402pay_chain.payee.address, "--rpc-url", x402pay_chain.rpc_url]

    assert main(["verify", tx, *common, "--amount", "0.01", "--asset", x402pay_chain.usdc]) == 0
    assert capsys.readouterr().out.strip() == "verified"
    assert main(["verify", tx, *common, "--amount", "0.02", "--asset", x402pay_chain.usdc]) == 1
    assert capsys.readouterr().out.startswith("mismatch")
    wrong = [*common[:1], x402pay_chain.payers[0].address, *common[2:]]
    assert main(["verify", tx, *wrong, "--amount", "0.01", "--asset", x402pay_chain.usdc]) == 2
    assert f"--payer {x402pay_chain.payers[0].address} does not match" in capsys.readouterr().err


def test_trust_list_and_reset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from x402pay._trust import TrustStore

    marks = tmp_path / "untrusted.json"
    TrustStore(marks).mark("https://liar.example", "forged receipt")
    assert main(["trust", "--trust-file", str(marks), "list"]) == 0
    assert "https://liar.example  forged receipt" in capsys.readouterr().out
    assert main(["trust", "--trust-file", str(marks), "reset", "https://liar.example"]) == 0
    assert "trusted again" in capsys.readouterr().out
    assert TrustStore(marks).marks() == {}


def test_pay_records_in_the_default_ledger_under_the_config_budget(
    x402pay_chain: Devnet, demo_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    payer = x402pay_chain.payers[2]
    config = tmp_path / "config" / "x402pay" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'budget = "0.015"\nasset = "{x402pay_chain.usdc}"\nmax = "0.05"\n')

    first = pay(demo_url + "/v1/fortune", "--json", key="0x" + payer.key.hex())
    second = pay(demo_url + "/v1/fortune", key="0x" + payer.key.hex())

    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stderr)
    assert (summary["status"], summary["settled_amount_atomic"]) == ("settled", 10_000)
    assert second.returncode == 4
    (refusal,) = second.stderr.decode().splitlines()
    assert refusal.startswith("x402pay: refused to pay: budget [0x5fbdb231")
    assert refusal.endswith("has 0.005000 of 0.015000 USDC left, 0.010000 asked")
    assert (tmp_path / "state" / "x402pay" / "ledger.db").is_file()
    assert main(["ledger"]) == 0
    assert "settled" in capsys.readouterr().out
    assert main(["budget", "--json"]) == 0
    (status,) = json.loads(capsys.readouterr().out)
    assert (status["held"], status["remaining"]) == (10_000, 5_000)


def test_a_cap_in_the_xdg_config_applies(x402pay_chain: Devnet, demo_url: str, tmp_path: Path) -> None:
    config = tmp_path / "config" / "x402pay" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('max = "0.001"\n')
    result = pay(demo_url + "/v1/fortune", key="0x" + x402pay_chain.payers[2].key.hex())
    assert result.returncode == 4
    assert b"refused to pay" in result.stderr


def test_wallet_balance_as_json(
    x402pay_chain: Devnet, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    payer = x402pay_chain.payers[0]
    argv = ["wallet", "balance", "--json", "--rpc-url", x402pay_chain.rpc_url]
    clean_env.setenv("X402PAY_PRIVATE_KEY", "0x" + payer.key.hex())
    assert main(argv) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["address"] == payer.address
    assert shown["balance_atomic"] > 0
