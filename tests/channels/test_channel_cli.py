"""``x402pay channel list|withdraw|finalize``, ``ledger`` and ``pay --channels`` on anvil, after paying the official
server through a channel."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from channel_support import Channels
from eth_account.signers.local import LocalAccount
from official_stack import DELAY, PRICE, official_server

import x402pay
from x402pay.cli import main
from x402pay.ledger import Ledger

pytestmark = pytest.mark.chain


def test_list_refund_withdraw_and_finalize_a_channel_from_the_command_line(
    channels: Channels, payer: LocalAccount, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    devnet, path = channels.devnet, tmp_path / "ledger.db"
    for name in ("XDG_CONFIG_HOME", "XDG_STATE_HOME"):
        monkeypatch.setenv(name, str(tmp_path / name))
    monkeypatch.setenv("X402PAY_PRIVATE_KEY", bytes(payer.key).hex())
    chain = ["--ledger", str(path), "--rpc-url", devnet.rpc_url]
    policy = x402pay.SpendPolicy(max_per_request=PRICE, assets={devnet.usdc}, schemes=("batch-settlement",))
    with official_server(devnet) as stack:
        with Ledger.sqlite(path) as ledger:
            transport = x402pay.PaymentTransport(wallet=x402pay.Wallet.from_key(bytes(payer.key)), policy=policy,
                                                 rpc_url=devnet.rpc_url, ledger=ledger)  # fmt: skip
            with httpx.Client(transport=transport) as client:
                for _ in range(2):
                    assert client.get(stack.url + "/report").status_code == 200
        paid = ["pay", "--channels", "--max", "0.001", "--asset", devnet.usdc, *chain, stack.url + "/report"]
        assert main(paid) == 0  # a third request, paid by the command line from the same channel
        assert capsys.readouterr().out == '{"report":"the good stuff"}'
        assert main([*paid[:-1], "-H", f"{x402pay.CHANNEL_REFUND}: {3 * PRICE}", paid[-1]]) == 0
        capsys.readouterr()
    assert main(["channel", "list", "--ledger", str(path), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    # 10 000 deposited; 3 000 charged (claimed by the refund) and 3 000 refunded: 7 000 in escrow, 4 000 unspent
    assert (row["escrow"], row["spent"], row["committed"], row["state"]) == (7 * PRICE, 3 * PRICE, 0, "open")
    assert main(["channel", "list", "--ledger", str(path)]) == 0
    assert row["channel"][:18] in capsys.readouterr().out
    assert main(["ledger", "--ledger", str(path), "--json"]) == 0
    books = json.loads(capsys.readouterr().out)
    (deposit,) = books["entries"]  # the deposit is the one payment: the money that left the wallet
    assert (deposit["scheme"], deposit["amount"], deposit["held"]) == ("batch-settlement", 10 * PRICE, 7 * PRICE)
    (held,) = books["channels"]
    assert (held["escrow"], held["spent"], held["committed"]) == (7 * PRICE, 3 * PRICE, 0)
    assert main(["ledger", "--ledger", str(path)]) == 0
    table = capsys.readouterr().out
    assert "escrow" in table
    assert "unspent" in table
    assert "4000" in table
    assert main(["channel", "withdraw", row["channel"], *chain]) == 0
    assert "initiateWithdraw in 0x" in capsys.readouterr().out
    assert main(["channel", "finalize", row["channel"], *chain]) == 1  # the delay has not passed
    assert "finalizeWithdraw would revert: WithdrawDelayNotElapsed" in capsys.readouterr().err
    devnet.increase_time(DELAY + 1)
    payer_before = channels.balance_of(payer.address)
    assert main(["channel", "finalize", row["channel"], *chain]) == 0
    assert "4000 withdrawn in all, channel closed" in capsys.readouterr().out
    assert channels.balance_of(payer.address) == payer_before + 4 * PRICE
    with Ledger.sqlite(path) as ledger:
        assert [entry.held for entry in ledger.entries()] == [3 * PRICE]  # the budgets hold what was spent
    assert main(["channel", "withdraw", "0x12", *chain]) == 2
