"""The paid side on a chain that has been idle: a local anvil with automine makes no block while nobody pays.

Its latest block then lags the present by as long as the chain was idle, while the block a transaction sent now
would be mined in is timed by the node's clock. A fresh authorization (``validAfter`` backdated ten minutes, as the
official clients and x402pay sign) starts after that old block, so a simulation or gas estimate run at the latest
block refuses it as "not yet valid", and nothing is mined to make it right. The facilitator must judge a payment at
the block it would settle in.

Each test here gets its own anvil started an hour in the past with its clock then set to the present and no block
since (the ``idle_chain`` fixture of tests/conftest.py): the latest block is an hour old, as after an hour of idling.
"""

from __future__ import annotations

import httpx
import pytest
from paid_app import PRICE, UPTO_MAX, paid_server
from test_local_facilitator import requirement, signed

from x402pay import PaymentTransport, SpendPolicy, Wallet, payment_of
from x402pay.server import LocalFacilitator
from x402pay.testing import Devnet

pytestmark = pytest.mark.chain


@pytest.mark.parametrize("route", ["GET /paid", "GET /paid-permit2", "POST /metered"])
async def test_a_fresh_payment_verifies_and_settles_after_an_hour_without_blocks(
    idle_chain: Devnet, route: str
) -> None:
    wanted = requirement(idle_chain, route)
    facilitator = LocalFacilitator(idle_chain.rpc_url, idle_chain.facilitator, verify_ttl=0)
    first = await facilitator.verify(signed(idle_chain, wanted), wanted)  # in a worker thread: the chain id is new
    assert first.is_valid, first
    paid = signed(idle_chain, wanted)
    again = await facilitator.verify(paid, wanted)  # on the event loop, one batch of reads
    assert again.is_valid, again
    settled = await facilitator.settle(paid, wanted)
    assert (settled.success, settled.error_reason) == (True, None)
    assert settled.amount == (UPTO_MAX if route == "POST /metered" else PRICE)


def test_x402pay_pays_a_paid_side_whose_chain_was_idle(idle_chain: Devnet) -> None:
    facilitator = LocalFacilitator(idle_chain.rpc_url, idle_chain.facilitator)
    transport = PaymentTransport(wallet=Wallet(idle_chain.payers[0]), policy=SpendPolicy(max_per_request=UPTO_MAX))
    with paid_server(idle_chain, facilitator) as server, httpx.Client(transport=transport, timeout=60) as client:
        response = client.get(server.url + "/paid")
        assert response.status_code == 200, response.text
        payment = payment_of(response)
        assert payment is not None
        assert payment.settled_amount == PRICE
