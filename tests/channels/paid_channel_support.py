"""A channel-priced app behind x402pay's PaymentMiddleware + LocalFacilitator on loopback, and the official SDK's
batch-settlement client to pay it (x402 2.25: spend controls for the devnet's USDC, file storage per test)."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from x402 import x402Client
from x402.http.clients.httpx import x402_httpx_transport
from x402.mechanisms.evm.batch_settlement.client import (
    BatchSettlementEvmScheme,
    BatchSettlementEvmSchemeOptions,
    FileChannelStorageOptions,
    FileClientChannelStorage,
)
from x402.mechanisms.evm.signers import EthAccountSignerWithRPC

from x402pay.ledger import AsyncLedger, Ledger
from x402pay.server import (
    ChannelClaims,
    Facilitator,
    HTTPFacilitator,
    LocalFacilitator,
    PaymentMiddleware,
    Price,
    facilitator_app,
    paid_request,
)
from x402pay.server._serving import serve_app
from x402pay.testing import Devnet

PRICE = 1_000  # the most one request costs
CAP = 100_000  # the official client's per-payment cap (its deposits are at most 5x this)


@dataclass
class Probe:
    """What the app saw, and a gate that holds a request open (for the concurrent-request test)."""

    calls: list[str] = field(default_factory=list)
    gate: threading.Event = field(default_factory=threading.Event)
    entered: threading.Event = field(default_factory=threading.Event)


def make_app(probe: Probe) -> Starlette:
    async def quote(request: Request) -> Response:
        probe.calls.append(request.url.path)
        use = request.query_params.get("use")
        if use is not None:
            paid_request(request.scope).charge(int(use))  # type: ignore[union-attr]
        if request.query_params.get("hold"):
            probe.entered.set()
            import anyio.to_thread

            await anyio.to_thread.run_sync(probe.gate.wait, 20)
        if request.query_params.get("fail"):
            return JSONResponse({"error": "the app failed"}, status_code=500)
        return JSONResponse({"quote": 42})

    async def stream(request: Request) -> Response:
        probe.calls.append(request.url.path)

        async def frames() -> AsyncIterator[str]:
            yield 'data: {"n":1}\n\n'
            paid_request(request.scope).charge(int(request.query_params["use"]))  # type: ignore[union-attr]
            yield "data: [DONE]\n\n"

        return StreamingResponse(frames(), media_type="text/event-stream")

    routes = [Route("/quote", quote), Route("/quote-permit2", quote), Route("/stream", stream)]
    return Starlette(routes=routes)


@dataclass(frozen=True)
class Place:
    """Where a payer's ledger lives: an SQLite file, or a PostgreSQL schema of its own (`place` in conftest)."""

    target: str
    schema: str | None = None

    def ledger(self) -> Ledger:
        return Ledger.open(self.target, schema=self.schema)

    async def aledger(self) -> AsyncLedger:
        return await AsyncLedger.open(self.target, schema=self.schema)


@dataclass
class ChannelServer:
    """The running server, its parts, and the chain."""

    url: str
    devnet: Devnet
    probe: Probe
    middleware: PaymentMiddleware
    facilitator: LocalFacilitator
    authorizer: LocalAccount
    facilitator_url: str | None  # where facilitator_app serves it, when the middleware reaches it over HTTP
    server_signs: bool  # the server holds the receiverAuthorizer key, not the facilitator

    def claims(self) -> ChannelClaims:
        """A claims manager of the server's store, through the facilitator as the server reaches it (over HTTP: a
        client of its own, as an HTTP client belongs to the event loop that uses it)."""
        talks_to = self.facilitator if self.facilitator_url is None else HTTPFacilitator(self.facilitator_url)
        return ChannelClaims(
            self.middleware.channels.store, talks_to, network=self.devnet.network, web3=self.devnet.rpc_url,
            authorizer=self.authorizer if self.server_signs else None,
        )  # fmt: skip

    def middleware_client(self) -> httpx.Client:
        """A plain HTTP client of the server (it pays nothing by itself)."""
        return httpx.Client(base_url=self.url, timeout=30)

    def balance(self, who: str) -> int:
        return int(self.devnet.contract("TestUSDC", self.devnet.usdc).functions.balanceOf(who).call())

    def settlement(self) -> Any:
        return self.devnet.contract("X402BatchSettlement", self.devnet.batch_settlement)


@contextlib.contextmanager
def channel_server(
    devnet: Devnet, *, remote: bool = False, server_signs: bool = False, port: int = 0, **price_options: Any
) -> Iterator[ChannelServer]:
    """The app on loopback (on `port`, or any free one); `remote`: its facilitator reached over HTTP
    (facilitator_app + HTTPFacilitator); `server_signs`: the receiverAuthorizer key is the server's (the
    middleware's and the claims manager's). Each server has a receiverAuthorizer of its own: its own channels."""
    authorizer = Account.create()
    key = None if server_signs else authorizer
    facilitator = LocalFacilitator(devnet.rpc_url, devnet.facilitator, channel_authorizer=key)
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(serve_app(facilitator_app(facilitator))) if remote else None
        yield stack.enter_context(_served(devnet, facilitator, url, authorizer, server_signs, port, price_options))


@contextlib.contextmanager
def _served(
    devnet: Devnet, facilitator: LocalFacilitator, facilitator_url: str | None, authorizer: LocalAccount,
    server_signs: bool, port: int, price_options: dict[str, Any],
) -> Iterator[ChannelServer]:  # fmt: skip
    talks_to: Facilitator = facilitator if facilitator_url is None else HTTPFacilitator(facilitator_url)
    probe = Probe()
    common = {"asset": devnet.usdc, "receiver_authorizer": authorizer.address, **price_options}
    routes = {
        "GET /quote": Price.channel(PRICE, **common),
        "GET /quote-permit2": Price.channel(PRICE, transfer="permit2", **common),
        "GET /stream": Price.channel(PRICE, **common),
    }
    middleware = PaymentMiddleware(
        make_app(probe), facilitator=talks_to, network=devnet.network, pay_to=devnet.payee.address, routes=routes,
        channel_authorizer=authorizer if server_signs else None,
    )  # fmt: skip
    with serve_app(middleware, port=port) as url:
        yield ChannelServer(url, devnet, probe, middleware, facilitator, authorizer, facilitator_url, server_signs)
        probe.gate.set()


def official_scheme(devnet: Devnet, payer: LocalAccount, storage: Path) -> BatchSettlementEvmScheme:
    """The SDK's channel client, reading the chain (for cold-start recovery), keeping its channels in `storage`."""
    options = BatchSettlementEvmSchemeOptions(storage=FileClientChannelStorage(FileChannelStorageOptions(storage)))
    return BatchSettlementEvmScheme(EthAccountSignerWithRPC(payer, rpc_url=devnet.rpc_url), options)


def official_http(devnet: Devnet, scheme: BatchSettlementEvmScheme, url: str) -> httpx.AsyncClient:
    client = x402Client().register(devnet.network, scheme)
    allowed = {"network": devnet.network, "asset": devnet.usdc, "max_amount_per_payment": str(CAP)}
    client.set_spend_controls({"allowed_assets": [allowed]})
    return httpx.AsyncClient(transport=x402_httpx_transport(client), base_url=url, timeout=30)


POSTGRES_ENV = "X402PAY_TEST_POSTGRES_DSN"


def reachable_postgres() -> str:
    """The test PostgreSQL's DSN (``$X402PAY_TEST_POSTGRES_DSN`` or the local default) once it answers; unreachable,
    a skip that says what to set, except under CI, where it fails."""
    dsn = os.environ.get(POSTGRES_ENV, "postgresql://postgres@127.0.0.1:5432/test")
    try:
        import psycopg

        psycopg.connect(dsn, connect_timeout=5).close()
    except Exception as exc:  # psycopg missing, or any connection failure
        message = f"needs PostgreSQL at {dsn} (set {POSTGRES_ENV}): {exc}"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return dsn


def drop_schema(dsn: str, schema: str) -> None:
    """Drop a test's own PostgreSQL schema."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def counted_correctives(server: ChannelServer, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The reasons of the corrective 402s the server sends from now on."""
    corrected: list[str] = []
    corrective = server.middleware.channels._corrective

    async def counted(request: Any, record: Any, reason: str, message: str, send: Any) -> None:
        corrected.append(reason)
        await corrective(request, record, reason, message, send)

    monkeypatch.setattr(server.middleware.channels, "_corrective", counted)
    return corrected
