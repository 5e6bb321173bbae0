"""A scripted batch-settlement server that lies, served by uvicorn on loopback, for the payer's adversarial tests.

It answers as a batch-settlement server would: a 402 offering one channel option (its `min_deposit` hint as set),
then, for a paid request, it sends a deposit to the chain itself (from the devnet's facilitator account, with the
payer's signed authorization) and reports the charge and the channel's state. Its `lie` decides what it reports:

- ``honest``: the price, and the true state;
- ``overcharge``: twice the request's maximum;
- ``cumulative``: a cumulative charge 500 above the truth;
- ``balance``: a channel balance 1 above the truth;
- ``no_deposit``: a deposit reported as made (with a made-up transaction) that it never sent;
- ``forged``: every paid request gets a corrective 402 whose ``voucherState`` a stranger signed, claiming that
  9 prices were charged.
- ``replay``: every paid request gets a corrective 402 "proven" by the voucher that very request just signed,
  claiming that its whole ceiling was charged already.

It keeps the payer's latest voucher, so a test can make it claim (``claimWithSignature``) whenever it likes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final

from channel_support import Channels, sign, transact
from eth_account import Account
from eth_account.signers.local import LocalAccount
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from x402pay._protocol.channel_extra import ChannelState, VoucherState
from x402pay._protocol.channel_wire import DepositPayload, Erc3009Deposit, Voucher, parse_payload
from x402pay._protocol.codec import decode_header, encode_header
from x402pay._schemes import channel, channel_deposit
from x402pay.errors import MalformedPayment
from x402pay.server import serve_app

PRICE: Final = 1_000
DELAY: Final = 900


@dataclass
class Hostile:
    """The server's script and memory: what it lies about, and what it knows of the one channel it serves."""

    channels: Channels
    lie: str = "honest"
    min_deposit: int = 10 * PRICE
    authorizer: LocalAccount = field(default_factory=Account.create)
    charged: int = 0
    balance: int = 0
    config: channel.ChannelConfig | None = None
    voucher: Voucher | None = None
    url: str = ""

    def requirement(self) -> dict[str, Any]:
        devnet = self.channels.devnet
        extra = {"receiverAuthorizer": self.authorizer.address, "withdrawDelay": DELAY, "name": "USD Coin",
                 "version": "2", "assetTransferMethod": "eip3009", "minDeposit": str(self.min_deposit)}  # fmt: skip
        return {"scheme": "batch-settlement", "network": devnet.network, "amount": str(PRICE), "asset": devnet.usdc,
                "payTo": devnet.payee.address, "maxTimeoutSeconds": 3600, "extra": extra}  # fmt: skip

    def challenge(self, extra: dict[str, Any] | None = None) -> Response:
        option = self.requirement()
        option["extra"] |= extra or {}
        body = {"x402Version": 2, "resource": {"url": self.url + "/report"}, "accepts": [option]}
        return JSONResponse({}, status_code=402, headers={"PAYMENT-REQUIRED": encode_header(body)})

    def claim(self) -> Any:
        """Claim the latest voucher in full (``claimWithSignature``, sent by the devnet's facilitator)."""
        assert self.config is not None
        assert self.voucher is not None
        devnet, ceiling = self.channels.devnet, self.voucher.max_claimable_amount
        entry = channel.ClaimEntry(self.voucher.channel_id, ceiling, ceiling)
        signature = sign(self.authorizer, channel.claim_batch_digest([entry], devnet.chain_id))
        row = ((self.config.as_abi(), ceiling), self.voucher.signature, ceiling)
        call = self.channels.settlement.functions.claimWithSignature([row], signature)
        return transact(call, self.channels.sender)

    async def report(self, request: Request) -> Response:
        header = request.headers.get("payment-signature")
        if header is None:
            return self.challenge()
        payload = parse_payload(decode_header(header, what="payment", error=MalformedPayment)["payload"])
        self.config, self.voucher = payload.config, payload.voucher
        if self.lie == "forged":
            return self.challenge({"channelState": self._state(9 * PRICE).as_wire(),
                                   "voucherState": self._forged_voucher(payload.voucher.channel_id)})  # fmt: skip
        if self.lie == "replay":
            ceiling, ours = payload.voucher.max_claimable_amount, payload.voucher.signature
            return self.challenge({"channelState": self._state(ceiling).as_wire(),
                                   "voucherState": VoucherState(ceiling, ours).as_wire()})  # fmt: skip
        transaction = ""
        if isinstance(payload, DepositPayload):
            transaction = self._deposit(payload) if self.lie != "no_deposit" else "0x" + "ab" * 32
            self.balance += payload.deposit.amount if self.lie == "no_deposit" else 0
        self.charged += PRICE
        if self.lie == "stream_overcharge":  # a stream whose in-band receipt charges more than the voucher allows
            return self._stream(2 * PRICE, transaction)
        charged = 2 * PRICE if self.lie == "overcharge" else PRICE
        cumulative = self.charged + (500 if self.lie == "cumulative" else 0)
        state = self._state(cumulative, self.balance + (1 if self.lie == "balance" else 0))
        settled = {"success": True, "transaction": transaction, "network": self.channels.devnet.network, "amount": "",
                   "extra": {"chargedAmount": str(charged), "channelState": state.as_wire()}}  # fmt: skip
        return JSONResponse({"report": "paid"}, headers={"PAYMENT-RESPONSE": encode_header(settled)})

    def _stream(self, charged: int, transaction: str) -> Response:
        assert self.config is not None
        receipt = {"finalAmountWei": str(charged), "network": self.channels.devnet.network, "settledAt": 0,
                   "settlementStatus": "settled", "userAddress": self.config.payer}  # fmt: skip
        receipt |= {"txHash": transaction} if transaction else {}
        frames = f'data: {{"n":1}}\n\nevent: compose.receipt\ndata: {json.dumps(receipt)}\n\ndata: [DONE]\n\n'
        return Response(frames, media_type="text/event-stream")

    def _state(self, cumulative: int, balance: int | None = None) -> ChannelState:
        assert self.voucher is not None
        balance = self.balance if balance is None else balance
        return ChannelState(self.voucher.channel_id, balance, 0, charged_cumulative_amount=cumulative)

    def _forged_voucher(self, channel_id: bytes) -> dict[str, Any]:
        ceiling = 10 * PRICE
        digest = channel.voucher_digest(channel_id, ceiling, self.channels.devnet.chain_id)
        return VoucherState(ceiling, sign(Account.create(), digest)).as_wire()

    def _deposit(self, payload: DepositPayload) -> str:
        authorization = payload.deposit.authorization
        assert isinstance(authorization, Erc3009Deposit)
        data = channel_deposit.erc3009_collector_data(
            valid_after=authorization.valid_after, valid_before=authorization.valid_before, salt=authorization.salt,
            signature=authorization.signature,
        )  # fmt: skip
        devnet, amount = self.channels.devnet, payload.deposit.amount
        call = self.channels.settlement.functions.deposit(payload.config.as_abi(), amount, devnet.erc3009_collector,
                                                          data)  # fmt: skip
        receipt = transact(call, self.channels.sender)
        self.balance += amount
        return str(receipt["transactionHash"].to_0x_hex())


@contextmanager
def hostile_server(channels: Channels, **script: Any) -> Iterator[Hostile]:
    """Serve a `Hostile` server scripted by `script` until the block exits."""
    hostile = Hostile(channels, **script)
    app = Starlette(routes=[Route("/report", hostile.report)])
    with serve_app(app) as url:
        hostile.url = url
        yield hostile


def describe(hostile: Hostile) -> str:
    """For failure messages: what the server believes."""
    return json.dumps({"lie": hostile.lie, "charged": hostile.charged, "balance": hostile.balance})
