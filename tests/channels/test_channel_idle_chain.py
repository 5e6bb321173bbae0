"""A channel on a chain that has been idle an hour (tests/server/test_idle_chain.py says why that matters): the deposit
is verified and settled, the next request pays with a voucher. The facilitator simulates a deposit in the block it
would be mined in, as it does an exact or upto payment; x402pay's and the official channel clients sign deposits
valid from time 0, so theirs would pass at the hour-old latest block too, where one valid from a recent time would
not."""

from __future__ import annotations

from pathlib import Path

import pytest
from paid_channel_support import PRICE, channel_server
from test_channel_end_to_end import pay, paying

from x402pay.ledger import Ledger
from x402pay.testing import Devnet

pytestmark = pytest.mark.chain


def test_a_deposit_then_a_voucher_pay_a_channel_route_after_an_hour_without_blocks(
    idle_chain: Devnet, tmp_path: Path
) -> None:
    payer = idle_chain.payers[0]
    with (
        Ledger.sqlite(tmp_path / "ledger.sqlite3") as ledger,
        channel_server(idle_chain) as server,
        paying(idle_chain, payer, ledger) as client,
    ):
        deposit, voucher = pay(client, server, [PRICE, 250])
    assert deposit.transaction  # the deposit went on chain
    assert (deposit.settled_amount, voucher.settled_amount, voucher.transaction) == (PRICE, 250, None)
