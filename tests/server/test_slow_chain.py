"""The paid side on a slow chain: anvil with automine off, so a settlement is sent and not mined within the wait.

The client must be told "pending" with the transaction hash, never "not charged"; a re-send during the wait (or
after a server restart) must broadcast nothing new; once the block is mined, the payer's loss must equal what the
server's books (its `SettlementStore`) and the client's books (its ledger, after reconcile) say.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from paid_app import PRICE, UPTO_MAX, PaidServer, paid_server, routes
from server_support import automine_off, balance, decode, eip3009_payload, header, mine, rpc_relay, unmined
from web3 import Web3
from x402 import x402Client
from x402.http.clients.httpx import x402_httpx_transport
from x402.http.utils import decode_payment_response_header
from x402.mechanisms.evm.exact.register import register_exact_evm_client
from x402.mechanisms.evm.signers import EthAccountSigner
from x402.mechanisms.evm.upto import UptoEvmClientScheme

from x402pay import PaymentTransport, SettlementPending, SpendPolicy, Wallet, payment_of
from x402pay._protocol.models import PaymentPayload
from x402pay.errors import FacilitatorError
from x402pay.ledger import EntryState, Ledger, Web3Chain
from x402pay.server import Broadcast, LocalFacilitator, SettlementStore
from x402pay.server._serving import serve_app
from x402pay.testing import Devnet

pytestmark = pytest.mark.chain

WAIT = 1.0  # the facilitator's receipt wait: short, so that a test sees the pending answer quickly


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "settlements.sqlite3"


@pytest.fixture
def slow_facilitator(x402pay_chain: Devnet, store_path: Path) -> Iterator[LocalFacilitator]:
    facilitator = LocalFacilitator(
        x402pay_chain.rpc_url, x402pay_chain.facilitator, receipt_timeout=WAIT, settlements=store_path
    )
    yield facilitator
    facilitator.settlements.close()


@pytest.fixture
def server(x402pay_chain: Devnet, slow_facilitator: LocalFacilitator) -> Iterator[PaidServer]:
    with paid_server(x402pay_chain, slow_facilitator, gas_sponsoring=False) as paid:
        yield paid


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger.sqlite(tmp_path / "ledger.sqlite3") as opened:
        yield opened


def transport(devnet: Devnet, ledger: Ledger, **options: Any) -> PaymentTransport:
    policy = SpendPolicy(max_per_request=UPTO_MAX)
    return PaymentTransport(wallet=Wallet(devnet.payers[0]), policy=policy, ledger=ledger, **options)


def settle_books(devnet: Devnet, facilitator: LocalFacilitator, ledger: Ledger) -> tuple[int, int]:
    """Reconcile both sides from the chain; what the server's and the client's books say the payer was charged."""
    assert all(broadcast.state == "settled" for broadcast in facilitator.reconcile())
    ledger.reconcile(Web3Chain(Web3(Web3.HTTPProvider(devnet.rpc_url))))
    client_says = sum(entry.held for entry in ledger.entries(states=[EntryState.SETTLED]))
    assert ledger.entries(states=[EntryState.UNKNOWN, EntryState.CLAIMED, EntryState.AUTHORIZED]) == []
    return facilitator.settlements.settled_total(devnet.payers[0].address), client_says


# -- x402pay's client ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "charge"),
    [("GET", "/paid", None, PRICE), ("POST", "/metered", {"use": 4242}, 4242)],
    ids=["exact", "upto"],
)
def test_a_pending_settlement_is_pending_with_its_hash_and_a_resend_broadcasts_nothing(
    server: PaidServer, slow_facilitator: LocalFacilitator, ledger: Ledger, method: str, path: str,
    body: dict[str, Any] | None, charge: int,
) -> None:  # fmt: skip
    devnet, payer = server.devnet, server.devnet.payers[0]
    before = balance(devnet, payer.address)
    key = {"Idempotency-Key": f"slow-{path}"}
    with automine_off(devnet), httpx.Client(transport=transport(devnet, ledger), base_url=server.url) as http:
        with pytest.raises(SettlementPending, match="do not pay again") as pending:
            http.request(method, path, json=body, headers=key)
        (broadcast,) = slow_facilitator.settlements.pending()
        assert pending.value.transaction == broadcast.tx_hash
        assert broadcast.amount == charge
        (entry,) = ledger.entries()
        assert (entry.state, entry.held) == (EntryState.UNKNOWN, entry.amount)  # the signed maximum, held
        with pytest.raises(SettlementPending) as again:  # the SDK-style re-send of the same payment
            http.request(method, path, json=body, headers=key)
        assert again.value.transaction == broadcast.tx_hash
        assert unmined(devnet, slow_facilitator) == 1  # nothing new was broadcast
        assert balance(devnet, payer.address) == before
        mine(devnet)
    assert balance(devnet, payer.address) == before - charge
    assert settle_books(devnet, slow_facilitator, ledger) == (charge, charge)


def test_a_prepaid_request_is_told_pending_too(
    server: PaidServer, slow_facilitator: LocalFacilitator, ledger: Ledger
) -> None:
    devnet, payer = server.devnet, server.devnet.payers[0]
    with httpx.Client(transport=transport(devnet, ledger, prepay=True), base_url=server.url) as http:
        assert http.get("/paid").status_code == 200  # the route's challenge is now known: the next call pre-pays
        before = balance(devnet, payer.address)
        with automine_off(devnet):
            with pytest.raises(SettlementPending) as pending:
                http.get("/paid")
            assert pending.value.payment.prepaid
            assert pending.value.transaction == slow_facilitator.settlements.pending()[0].tx_hash
    assert balance(devnet, payer.address) == before - PRICE
    assert settle_books(devnet, slow_facilitator, ledger) == (2 * PRICE, 2 * PRICE)


@pytest.mark.parametrize(("path", "charge"), [("/stream", 4321), ("/stream-exact", PRICE)], ids=["upto", "exact"])
def test_a_stream_is_served_at_once_and_ends_with_a_pending_receipt(
    server: PaidServer, slow_facilitator: LocalFacilitator, ledger: Ledger, path: str, charge: int
) -> None:
    devnet, payer = server.devnet, server.devnet.payers[0]
    before = balance(devnet, payer.address)
    paying = transport(devnet, ledger, keep_receipt_frames=True)  # the receipt frame is shown, not only read
    with automine_off(devnet), httpx.Client(transport=paying, base_url=server.url) as http:
        with http.stream("POST", path, json={"use": charge, "wait": True}) as response:
            chunks = response.iter_text()
            assert next(chunks).startswith('data: {"n":1}')  # the first byte waits for no settlement
            assert slow_facilitator.settlements.pending() == []
            server.probe.gate.set()
            rest = "".join(chunks)
        receipt = json.loads(rest.split("event: compose.receipt\ndata: ", 1)[1].split("\n", 1)[0])
        (broadcast,) = slow_facilitator.settlements.pending()
        assert (receipt["settlementStatus"], receipt["txHash"]) == ("pending", broadcast.tx_hash)
        payment = payment_of(response)
        assert payment is not None
        assert payment.receipt is None
        assert payment.settlement is not None
        assert (payment.settlement.error_reason, payment.settlement.transaction) == (
            "settlement_pending",
            receipt["txHash"],
        )
        (entry,) = ledger.entries()
        assert (entry.state, entry.held) == (EntryState.UNKNOWN, entry.amount)
        # The stream went out: its payment, presented again while pending, is not served a second time.
        name, value = entry.payment["header"] if entry.payment else ("", "")
        again = httpx.post(server.url + path, json={"use": charge}, headers={name: value})
        assert again.status_code == 402
        assert len(slow_facilitator.settlements.pending()) == 1
        mine(devnet)
    assert balance(devnet, payer.address) == before - charge
    assert settle_books(devnet, slow_facilitator, ledger) == (charge, charge)


def test_a_server_restart_during_the_wait_keeps_the_pending_answer(
    x402pay_chain: Devnet, slow_facilitator: LocalFacilitator, store_path: Path, ledger: Ledger
) -> None:
    devnet, payer = x402pay_chain, x402pay_chain.payers[0]
    before = balance(devnet, payer.address)
    key = {"Idempotency-Key": "restart-1"}
    with automine_off(devnet), httpx.Client(transport=transport(devnet, ledger)) as http:
        with paid_server(devnet, slow_facilitator) as first, pytest.raises(SettlementPending) as pending:
            http.post(first.url + "/metered", json={"use": 777}, headers=key)
        slow_facilitator.settlements.close()
        restarted = LocalFacilitator(devnet.rpc_url, devnet.facilitator, receipt_timeout=WAIT, settlements=store_path)
        port = int(first.url.rsplit(":", 1)[1])  # the same origin, restarted
        with paid_server(devnet, restarted, port=port) as second, pytest.raises(SettlementPending) as again:
            # The same payment, re-sent to the restarted server (the ledger re-sends it byte for byte).
            http.post(second.url + "/metered", json={"use": 777}, headers=key)
        assert again.value.transaction == pending.value.transaction
        assert unmined(devnet, restarted) == 1
        mine(devnet)
        assert settle_books(devnet, restarted, ledger) == (777, 777)
    assert balance(devnet, payer.address) == before - 777
    restarted.settlements.close()


# -- the official Python client ----------------------------------------------------------------------------------


def official_client(devnet: Devnet) -> x402Client:
    signer = EthAccountSigner(devnet.payers[0])
    client = x402Client()
    register_exact_evm_client(client, signer, networks=devnet.network)
    client.register(devnet.network, UptoEvmClientScheme(signer))
    allowed = {"network": devnet.network, "asset": devnet.usdc, "max_amount_per_payment": str(UPTO_MAX)}
    return client.set_spend_controls({"allowed_assets": [allowed]})


@pytest.mark.parametrize(
    ("method", "path", "body", "charge"),
    [("GET", "/paid", None, PRICE), ("POST", "/metered", {"use": 4242}, 4242)],
    ids=["exact", "upto"],
)
async def test_the_official_client_is_told_settlement_pending_with_the_hash(
    server: PaidServer, slow_facilitator: LocalFacilitator, method: str, path: str, body: Any, charge: int
) -> None:
    devnet, payer = server.devnet, server.devnet.payers[0]
    before = balance(devnet, payer.address)
    with automine_off(devnet):
        async with httpx.AsyncClient(
            transport=x402_httpx_transport(official_client(devnet)), base_url=server.url, timeout=30
        ) as http:
            response = await http.request(method, path, json=body)
        assert response.status_code == 402
        assert response.headers["cache-control"] == "no-store"
        settlement = decode_payment_response_header(response.headers["payment-response"])
        (broadcast,) = slow_facilitator.settlements.pending()
        assert (settlement.success, settlement.error_reason) == (False, "settlement_pending")
        assert settlement.transaction == broadcast.tx_hash
        assert decode(response.headers["payment-response"])["amount"] == str(charge)
        mine(devnet)
    assert balance(devnet, payer.address) == before - charge
    (settled,) = slow_facilitator.reconcile()
    assert (settled.state, settled.amount) == ("settled", charge)
    assert slow_facilitator.settlements.settled_total(payer.address) == charge


async def test_the_official_client_reads_a_pending_receipt_at_the_end_of_a_stream(
    server: PaidServer, slow_facilitator: LocalFacilitator
) -> None:
    devnet, payer = server.devnet, server.devnet.payers[0]
    before = balance(devnet, payer.address)
    with automine_off(devnet):
        async with httpx.AsyncClient(
            transport=x402_httpx_transport(official_client(devnet)), base_url=server.url, timeout=30
        ) as http:
            response = await http.post("/stream", json={"use": 4321})
        assert response.status_code == 200
        (broadcast,) = slow_facilitator.settlements.pending()
        assert f'"settlementStatus":"pending","userAddress":"{payer.address}","txHash":"{broadcast.tx_hash}"' in (
            response.text
        )
        mine(devnet)
    assert balance(devnet, payer.address) == before - 4321


def test_a_broadcast_never_mined_before_its_deadline_is_failed_by_reconcile(
    x402pay_chain: Devnet, store_path: Path
) -> None:
    store = SettlementStore(store_path)
    facilitator = LocalFacilitator(x402pay_chain.rpc_url, x402pay_chain.facilitator, settlements=store)
    chain_time = x402pay_chain.chain_time()
    lost = Broadcast(
        "31337:0x:eip3009:0xpayer:0x01", "0x" + "ab" * 32, x402pay_chain.network, "0xpayer", 5, chain_time - 1
    )
    alive = Broadcast(
        "31337:0x:eip3009:0xpayer:0x02", "0x" + "cd" * 32, x402pay_chain.network, "0xpayer", 5, chain_time + 3600
    )
    store.sending(lost)
    store.sending(alive)
    mine(x402pay_chain)
    decided = {broadcast.key: broadcast.state for broadcast in facilitator.reconcile()}
    assert decided == {lost.key: "failed", alive.key: "pending"}
    assert [broadcast.key for broadcast in store.pending()] == [alive.key]
    store.close()


def test_two_settlements_of_one_payment_at_once_send_one_transaction(
    x402pay_chain: Devnet, slow_facilitator: LocalFacilitator
) -> None:
    devnet = x402pay_chain
    wanted = routes(devnet)["GET /paid"].requirement(
        network=devnet.network, chain_id=devnet.chain_id, pay_to=devnet.payee.address, ceiling=None, facilitator=None
    )
    paid = PaymentPayload.model_validate(eip3009_payload(devnet, devnet.payers[0], wanted.to_wire()))
    start = threading.Barrier(2)

    def settle() -> str:
        start.wait()
        return slow_facilitator.settle_blocking(paid, wanted).transaction

    with automine_off(devnet), ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: settle(), range(2)))
        assert unmined(devnet, slow_facilitator) == 1
        assert answers[0] == answers[1] == slow_facilitator.settlements.pending()[0].tx_hash


class Unanswered(LocalFacilitator):
    """Sends the settlement, then loses the answer (as a remote facilitator whose ``/settle`` times out)."""

    async def settle(self, payload: Any, requirements: Any) -> Any:
        await super().settle(payload, requirements)
        raise FacilitatorError("POST /settle timed out")


def test_a_settle_without_a_verdict_is_pending_never_not_charged(x402pay_chain: Devnet) -> None:
    devnet, payer = x402pay_chain, x402pay_chain.payers[0]
    before = balance(devnet, payer.address)
    with paid_server(devnet, Unanswered(devnet.rpc_url, devnet.facilitator)) as server:
        requirement = decode(server.client.get("/paid").headers["payment-required"])["accepts"][0]
        payment = header(eip3009_payload(devnet, payer, requirement))
        response = server.client.get("/paid", headers={"PAYMENT-SIGNATURE": payment})
    assert response.status_code == 402
    settlement = decode(response.headers["payment-response"])
    assert (settlement["success"], settlement["errorReason"]) == (False, "settlement_pending")
    assert balance(devnet, payer.address) == before - PRICE  # it was charged: "not charged" would have been a lie


def answer_lost_rpc(upstream: str) -> Any:
    """A JSON-RPC relay in front of anvil that forwards everything but loses the answer to a broadcast (a 502 after
    the node took it), as a proxy or a network that fails at the wrong moment would."""
    return rpc_relay(upstream, lambda body: b'"eth_sendRawTransaction"' in body)


def test_a_broadcast_whose_answer_is_lost_is_followed_never_failed(x402pay_chain: Devnet, tmp_path: Path) -> None:
    devnet, payer = x402pay_chain, x402pay_chain.payers[0]
    before = balance(devnet, payer.address)
    with serve_app(answer_lost_rpc(devnet.rpc_url)) as rpc_url:
        facilitator = LocalFacilitator(rpc_url, devnet.facilitator, receipt_timeout=WAIT)
        with paid_server(devnet, facilitator) as server:
            requirement = decode(server.client.get("/paid").headers["payment-required"])["accepts"][0]
            payment = header(eip3009_payload(devnet, payer, requirement))
            response = server.client.get("/paid", headers={"PAYMENT-SIGNATURE": payment})
    assert response.status_code == 200, response.text  # the node took it and mined it: the answer says so
    settlement = decode(response.headers["payment-response"])
    assert settlement["success"] is True
    assert devnet.web3().eth.get_transaction_receipt(settlement["transaction"])["status"] == 1
    assert balance(devnet, payer.address) == before - PRICE
