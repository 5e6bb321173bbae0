"""An async transport's channel effects, on anvil: the chain's part runs in a worker thread (web3 blocks), an
`AsyncLedger`'s channel book is awaited on the event loop itself."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount

import x402pay
from x402pay import _channel_chain
from x402pay._channel_chain import OnChain
from x402pay._effects import ChannelChain, ChannelOp
from x402pay._engine import Engine
from x402pay.ledger import AsyncLedger
from x402pay.ledger._channels import AsyncChannelBook, ChannelRecord
from x402pay.testing import Devnet

pytestmark = pytest.mark.chain


def engine(devnet: Devnet, payer: LocalAccount, ledger: AsyncLedger | None = None) -> Engine:
    wallet = x402pay.Wallet.from_key(bytes(payer.key))
    options: dict[str, Any] = {"rpc_url": devnet.rpc_url, "ledger": ledger}
    return Engine(wallet=wallet, policy=x402pay.SpendPolicy(max_per_request=1_000), options=options, asynchronous=True)


async def test_a_channels_chain_read_runs_off_the_event_loop(
    x402pay_chain: Devnet, payer: LocalAccount, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[int] = []
    real = _channel_chain.read_channel

    def recorded(*args: Any) -> OnChain:
        threads.append(threading.get_ident())
        return real(*args)

    monkeypatch.setattr(_channel_chain, "read_channel", recorded)
    unknown = b"\x42" * 32  # no deposit ever made it: the contract answers zeros
    reading = engine(x402pay_chain, payer)
    on_chain = await reading.aperform(ChannelChain("read", (unknown, 900)))
    await reading.aclose()
    assert on_chain == OnChain(0, 0)
    assert len(threads) == 1
    assert threads[0] != threading.get_ident()


async def test_an_async_ledgers_channel_book_is_awaited_and_its_lease_held(
    x402pay_chain: Devnet, payer: LocalAccount, tmp_path: Path
) -> None:
    async with await AsyncLedger.sqlite(tmp_path / "ledger.db") as ledger:
        paying = engine(x402pay_chain, payer, ledger)
        assert isinstance(paying.channels, AsyncChannelBook)
        new = ChannelRecord("0x" + "42" * 32, x402pay_chain.network, "http://127.0.0.1", x402pay_chain.usdc,
                            x402pay_chain.payee.address, {"withdrawDelay": 900})  # fmt: skip
        held = await paying.aperform(ChannelOp("lease", (new, "first", 60)))
        assert held is not None
        assert await paying.aperform(ChannelOp("lease", (new, "second", 60))) is None
        await paying.aperform(ChannelOp("release", (new.channel_id, "first")))
        assert await paying.aperform(ChannelOp("lease", (new, "second", 60))) is not None
        await paying.aclose()
