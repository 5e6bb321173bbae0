"""Paying on the devnet for the reconcile tests: sign with a Wallet, record in a ledger, settle as a facilitator."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from ledger_support import Backend
from web3 import Web3

from x402pay._protocol.addresses import EXACT_PERMIT2_PROXY_ADDRESS
from x402pay._protocol.models import PaymentRequirements
from x402pay._schemes.exact import SignedPayment, sign_exact
from x402pay._wallet import Wallet
from x402pay.ledger import Budget, Entry, Ledger
from x402pay.testing import load_artifact

AMOUNT = 12_345
LIFETIME = 60
TRANSFER_BYTES = "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,bytes)"


def chain_clock(web3: Web3) -> Callable[[], float]:
    """The local clock shifted onto the chain's (anvil's time may have been moved forward)."""
    offset = int(web3.eth.get_block("latest")["timestamp"]) - time.time()
    return lambda: time.time() + offset


def requirement(usdc: str, chain_id: int, payee: str, method: str) -> PaymentRequirements:
    extra = {"assetTransferMethod": "permit2"} if method == "permit2" else None
    wire = {"scheme": "exact", "network": f"eip155:{chain_id}", "amount": str(AMOUNT), "asset": usdc,
            "payTo": payee, "maxTimeoutSeconds": LIFETIME, "extra": extra}  # fmt: skip
    return PaymentRequirements.model_validate(wire)


def reserve_and_sign(ledger: Ledger, key: str, payer: LocalAccount, req: PaymentRequirements, now: int) -> Entry:
    """What the transport does before sending: reserve, sign, store the signed payment."""
    entry = ledger.reserve(key, origin="https://paid.example", asset=req.asset, network=req.network,
                           amount=req.amount, pay_to=req.pay_to)  # fmt: skip
    signed: SignedPayment = sign_exact(Wallet(payer), req, now=now, max_lifetime=LIFETIME)
    return ledger.authorize(entry.id, payment=signed.payload, payer=signed.payer, nonce=signed.nonce,
                            valid_before=signed.valid_before, method=signed.method)  # fmt: skip


def submit(web3: Web3, facilitator: LocalAccount, usdc: str, payload: dict[str, Any]) -> str:
    """Settle a stored payload on chain, as a facilitator would; return the transaction hash."""
    call = _call(web3, usdc, payload)
    tx = call.build_transaction({"from": facilitator.address,
                                 "nonce": web3.eth.get_transaction_count(facilitator.address, "pending")})  # fmt: skip
    tx_hash = web3.eth.send_raw_transaction(facilitator.sign_transaction(tx).raw_transaction)
    if web3.eth.wait_for_transaction_receipt(tx_hash)["status"] != 1:
        raise RuntimeError("settlement reverted")
    return Web3.to_hex(tx_hash)


def _call(web3: Web3, usdc: str, payload: dict[str, Any]) -> Any:
    signature = bytes.fromhex(payload["signature"].removeprefix("0x"))
    if "authorization" in payload:
        auth = payload["authorization"]
        token = web3.eth.contract(address=Web3.to_checksum_address(usdc), abi=load_artifact("TestUSDC")["abi"])
        return token.get_function_by_signature(TRANSFER_BYTES)(
            auth["from"], auth["to"], int(auth["value"]), int(auth["validAfter"]), int(auth["validBefore"]),
            bytes.fromhex(auth["nonce"].removeprefix("0x")), signature,
        )  # fmt: skip
    auth = payload["permit2Authorization"]
    proxy = web3.eth.contract(address=EXACT_PERMIT2_PROXY_ADDRESS, abi=load_artifact("X402ExactPermit2Proxy")["abi"])
    permit = ((auth["permitted"]["token"], int(auth["permitted"]["amount"])), int(auth["nonce"]), int(auth["deadline"]))
    witness = (auth["witness"]["to"], int(auth["witness"]["validAfter"]))
    return proxy.functions.settle(permit, auth["from"], witness, signature)


def pay_until_killed(backend: Backend, budgets: tuple[Budget, ...], rpc_url: str, usdc: str, payee: str,
                     payer_key: str, facilitator_key: str) -> None:  # fmt: skip
    """Child process: pay for request after request (alternating methods) until SIGKILL stops it anywhere."""
    web3 = Web3(Web3.HTTPProvider(rpc_url))
    payer: LocalAccount = Account.from_key(payer_key)
    facilitator: LocalAccount = Account.from_key(facilitator_key)
    clock = chain_clock(web3)
    with backend.ledger(budgets, clock=clock) as ledger:
        for number in range(10_000):
            req = requirement(usdc, web3.eth.chain_id, payee, ("eip3009", "permit2")[number % 2])
            entry = reserve_and_sign(ledger, f"request-{number}", payer, req, int(clock()))
            assert entry.payment is not None
            if number % 3 != 2:  # every third payment "is lost" before the facilitator sees it
                tx_hash = submit(web3, facilitator, usdc, dict(entry.payment))
                if number % 4 != 1:  # and some receipts never reach the ledger
                    ledger.settle(entry.id, amount=AMOUNT, tx_hash=tx_hash)
