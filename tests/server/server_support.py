"""Helpers for the server tests: sign x402 payments the way a client does, straight from eth-account; watch RPC."""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
from eth_account.signers.local import LocalAccount

from x402pay._protocol.addresses import EXACT_PERMIT2_PROXY_ADDRESS, PERMIT2_ADDRESS, UPTO_PERMIT2_PROXY_ADDRESS
from x402pay._schemes.eip712 import (
    EXACT_WITNESS_FIELDS,
    UPTO_WITNESS_FIELDS,
    eip2612_permit,
    permit_witness_transfer_from,
    transfer_with_authorization,
)
from x402pay.server import LocalFacilitator
from x402pay.testing import Devnet


def now(devnet: Devnet) -> int:
    """What the facilitator calls now: the later of the chain's clock and the wall clock."""
    return max(devnet.chain_time(), int(time.time()))


def eip3009_payload(
    devnet: Devnet,
    payer: LocalAccount,
    requirement: dict[str, Any],
    *,
    version: int = 2,
    signer: LocalAccount | None = None,
    **override: Any,
) -> dict[str, Any]:
    """A signed EIP-3009 payment for `requirement` (an accepts entry); `override` replaces message fields."""
    start = now(devnet)
    message = {
        "from": payer.address,
        "to": requirement["payTo"],
        "value": int(requirement["amount"]),
        "validAfter": start - 600,
        "validBefore": start + 300,
        "nonce": secrets.token_bytes(32),
        **override,
    }
    typed = transfer_with_authorization(
        token_name=requirement["extra"]["name"],
        token_version=requirement["extra"]["version"],
        chain_id=devnet.chain_id,
        token=requirement["asset"],
        authorization=message,
    )
    signature = (signer or payer).sign_typed_data(full_message=typed).signature
    authorization = {
        key: ("0x" + value.hex() if isinstance(value, bytes) else str(value)) for key, value in message.items()
    }
    return envelope(requirement, {"signature": "0x" + signature.hex(), "authorization": authorization}, version)


def permit2_payload(
    devnet: Devnet,
    payer: LocalAccount,
    requirement: dict[str, Any],
    *,
    signer: LocalAccount | None = None,
    **override: Any,
) -> dict[str, Any]:
    """A signed Permit2 witness payment (exact or upto, from the requirement's scheme)."""
    upto = requirement["scheme"] == "upto"
    start = now(devnet)
    fields = {
        "amount": int(requirement["amount"]),
        "spender": UPTO_PERMIT2_PROXY_ADDRESS if upto else EXACT_PERMIT2_PROXY_ADDRESS,
        "nonce": secrets.randbits(256),
        "deadline": start + 300,
        "to": requirement["payTo"],
        "validAfter": start - 600,
        "facilitator": requirement.get("extra", {}).get("facilitatorAddress"),
        "token": requirement["asset"],
        **override,
    }
    witness = {"to": fields["to"], "validAfter": fields["validAfter"]}
    if upto:
        witness = {"to": fields["to"], "facilitator": fields["facilitator"], "validAfter": fields["validAfter"]}
    typed = permit_witness_transfer_from(
        chain_id=devnet.chain_id,
        token=fields["token"],
        amount=fields["amount"],
        spender=fields["spender"],
        nonce=fields["nonce"],
        deadline=fields["deadline"],
        witness=witness,
        witness_fields=UPTO_WITNESS_FIELDS if upto else EXACT_WITNESS_FIELDS,
    )
    signature = (signer or payer).sign_typed_data(full_message=typed).signature
    authorization = {
        "from": payer.address,
        "permitted": {"token": fields["token"], "amount": str(fields["amount"])},
        "spender": fields["spender"],
        "nonce": str(fields["nonce"]),
        "deadline": str(fields["deadline"]),
        "witness": {key: str(value) for key, value in witness.items()},
    }
    return envelope(requirement, {"signature": "0x" + signature.hex(), "permit2Authorization": authorization}, 2)


def eip2612_extension(
    devnet: Devnet, payer: LocalAccount, amount: int, *, signer: LocalAccount | None = None, **override: Any
) -> dict[str, Any]:
    """The payload's ``eip2612GasSponsoring`` entry: `payer`'s EIP-2612 permit letting Permit2 move `amount`
    of the devnet's USDC; `override` replaces permit fields (owner, token, spender, value, nonce, deadline)."""
    usdc = devnet.contract("TestUSDC", devnet.usdc)
    fields = {
        "owner": payer.address,
        "token": devnet.usdc,
        "spender": PERMIT2_ADDRESS,
        "value": amount,
        "nonce": usdc.functions.nonces(payer.address).call(),
        "deadline": now(devnet) + 300,
        **override,
    }
    typed = eip2612_permit(token_name="USD Coin", token_version="2", chain_id=devnet.chain_id, **fields)
    signature = (signer or payer).sign_typed_data(full_message=typed).signature
    info = {
        "from": fields["owner"],
        "asset": fields["token"],
        "spender": fields["spender"],
        "amount": str(fields["value"]),
        "nonce": str(fields["nonce"]),
        "deadline": str(fields["deadline"]),
        "signature": "0x" + signature.hex(),
        "version": "1",
    }
    return {"eip2612GasSponsoring": {"info": info}}


def envelope(requirement: dict[str, Any], payload: dict[str, Any], version: int) -> dict[str, Any]:
    """The PaymentPayload around a scheme payload (v2: `accepted`; v1: scheme and network)."""
    if version == 1:
        return {
            "x402Version": 1,
            "scheme": requirement["scheme"],
            "network": requirement["network"],
            "payload": payload,
        }
    return {"x402Version": 2, "accepted": requirement, "payload": payload}


def header(payload: dict[str, Any]) -> str:
    """Standard base64 of the compact JSON, as clients send it."""
    return base64.b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode()


def decode(value: str) -> Any:
    """Decode a base64 (standard or url-safe, padded or not) JSON header."""
    text = value.replace("-", "+").replace("_", "/")
    return json.loads(base64.b64decode(text + "=" * (-len(text) % 4)))


# -- a slow chain: anvil with automine off ------------------------------------------------------------------


@contextlib.contextmanager
def automine_off(devnet: Devnet) -> Iterator[None]:
    """No block is mined until the test asks (`mine`); afterwards what is pending is mined and automine is back."""
    devnet.web3().provider.make_request("evm_setAutomine", [False])  # type: ignore[arg-type]
    try:
        yield
    finally:
        mine(devnet)
        devnet.web3().provider.make_request("evm_setAutomine", [True])  # type: ignore[arg-type]


def mine(devnet: Devnet) -> None:
    devnet.web3().provider.make_request("anvil_mine", [1])  # type: ignore[arg-type]


def unmined(devnet: Devnet, facilitator: LocalFacilitator) -> int:
    """How many of the facilitator's transactions wait in the mempool."""
    web3 = devnet.web3()
    return web3.eth.get_transaction_count(facilitator.address, "pending") - web3.eth.get_transaction_count(
        facilitator.address, "latest"
    )


def balance(devnet: Devnet, address: str) -> int:
    return int(devnet.contract("TestUSDC", devnet.usdc).functions.balanceOf(address).call())


class RecordingRpc:
    """A loopback JSON-RPC relay to `upstream` that notes the method of every request it forwards, in order.

    Between a facilitator and anvil, it shows what the facilitator asks the chain (a cache inside web3 answers
    some requests without any reaching the relay, which is the point of looking from outside).
    """

    def __init__(self, upstream: str) -> None:
        self.methods: list[str] = []
        self.batches: list[list[str]] = []  # the methods of each HTTP request (one for a single call)
        self.authorizations: list[str | None] = []  # each request's Authorization header
        relay = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                sent = json.loads(body)
                methods = [entry["method"] for entry in (sent if isinstance(sent, list) else [sent])]
                relay.methods.extend(methods)
                relay.batches.append(methods)
                relay.authorizations.append(self.headers.get("authorization"))
                answer = httpx.post(upstream, content=body, headers={"content-type": "application/json"})
                self.send_response(answer.status_code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the test reads `methods`."""

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> RecordingRpc:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


async def request_body(receive: Any) -> bytes:
    """The whole body of an ASGI request."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


def rpc_relay(upstream: str, loses: Callable[[bytes], bool]) -> Any:
    """An ASGI JSON-RPC relay in front of `upstream` (anvil): it forwards each request, after `loses` has seen its
    body and said whether the answer is lost on the way back (a 502 after the node took it)."""

    async def relay(scope: Any, receive: Any, send: Any) -> None:
        body = await request_body(receive)
        lost = loses(body)
        async with httpx.AsyncClient() as http:
            answered = await http.post(upstream, content=body, headers={"content-type": "application/json"})
        status, content = (502, b"bad gateway") if lost else (200, answered.content)
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": content})

    return relay


def refusing_relay(
    upstream: str, refuses: Callable[[dict[str, Any]], bool], error: dict[str, Any], seen: list[dict[str, Any]]
) -> Any:
    """An ASGI JSON-RPC relay to `upstream` (anvil) whose node answers `error` to every call that `refuses` picks
    (a method or a block tag it does not know); it forwards the rest, and notes every call in `seen`, in order."""

    async def relay(scope: Any, receive: Any, send: Any) -> None:
        calls = json.loads(await request_body(receive))
        batch = calls if isinstance(calls, list) else [calls]
        seen.extend(batch)
        refused = {call["id"] for call in batch if refuses(call)}
        async with httpx.AsyncClient() as http:
            answered = (await http.post(upstream, json=batch)).json()
        answers = [{"jsonrpc": "2.0", "id": a["id"], "error": error} if a["id"] in refused else a for a in answered]
        content = json.dumps(answers if isinstance(calls, list) else answers[0]).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": content})

    return relay
