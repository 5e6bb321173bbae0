"""Shared helpers of the verification tests: sign with x402pay, settle on anvil like a facilitator (or a liar)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from eth_account.signers.local import LocalAccount
from web3 import AsyncHTTPProvider, HTTPProvider
from web3.contract import Contract

from x402pay._protocol.addresses import UPTO_PERMIT2_PROXY_ADDRESS
from x402pay._protocol.models import PaymentRequirements
from x402pay._schemes import eip712
from x402pay._schemes.exact import SignedPayment, sign_exact
from x402pay._wallet import Wallet
from x402pay.testing import Devnet, load_artifact
from x402pay.verify import Claim

AMOUNT = 250_000
LIFETIME = 600
GAS = 400_000


def requirement(
    devnet: Devnet, *, asset: str | None = None, pay_to: str | None = None, **fields: Any
) -> PaymentRequirements:
    wire = {
        "scheme": "exact",
        "network": devnet.network,
        "amount": str(AMOUNT),
        "asset": asset or devnet.usdc,
        "payTo": pay_to or devnet.payee.address,
        "maxTimeoutSeconds": LIFETIME,
        **fields,
    }
    return PaymentRequirements.model_validate(wire)


def sign(devnet: Devnet, payer: LocalAccount, req: PaymentRequirements, now: int | None = None) -> SignedPayment:
    return sign_exact(Wallet(payer), req, now=now or devnet.chain_time(), max_lifetime=LIFETIME)


def sign_upto(devnet: Devnet, payer: LocalAccount, maximum: int = AMOUNT) -> SignedPayment:
    """An upto Permit2 authorization for at most `maximum` to the payee, naming the devnet facilitator."""
    now = devnet.chain_time()
    witness = {"to": devnet.payee.address, "facilitator": devnet.facilitator.address, "validAfter": now - 600}
    nonce = secrets.randbits(256)
    typed = eip712.permit_witness_transfer_from(
        chain_id=devnet.chain_id,
        token=devnet.usdc,
        amount=maximum,
        spender=UPTO_PERMIT2_PROXY_ADDRESS,
        nonce=nonce,
        deadline=now + LIFETIME,
        witness=witness,
        witness_fields=eip712.UPTO_WITNESS_FIELDS,
    )
    signature = Wallet(payer).sign_typed_data(typed)
    extra = {"assetTransferMethod": "permit2", "facilitatorAddress": devnet.facilitator.address}
    req = requirement(devnet, scheme="upto", amount=str(maximum), extra=extra)
    payload = {"signature": "0x" + signature.hex(), "permit2Authorization": typed["message"]}
    return SignedPayment(req, payload, payer.address, maximum, str(nonce), now - 600, now + LIFETIME, "permit2")


@dataclass
class Facilitator:
    """Sends settlement transactions from the devnet facilitator with explicit nonce, gas and fees (no estimates).

    A call that reverts is still mined (status 0), which is how a reverted settlement is made on purpose.
    """

    devnet: Devnet
    account: LocalAccount
    nonce: int
    wait: bool = True

    def send(self, call: Any) -> str:
        """Send `call`; wait until it is mined unless `wait` is off (anvil's receipts can lag its tx hashes)."""
        fees = {"maxFeePerGas": 10**10, "maxPriorityFeePerGas": 10**9, "chainId": self.devnet.chain_id}
        tx = call.build_transaction({"from": self.account.address, "nonce": self.nonce, "gas": GAS, **fees})
        self.nonce += 1
        web3 = self.devnet.web3()
        tx_hash = web3.eth.send_raw_transaction(self.account.sign_transaction(tx).raw_transaction)
        if self.wait:
            web3.eth.wait_for_transaction_receipt(tx_hash, timeout=10, poll_latency=0.01)
        return tx_hash.to_0x_hex()

    def settle(self, signed: SignedPayment, amount: int | None = None) -> str:
        """Settle `signed` on the chain (upto: charging `amount`, the maximum by default); return the tx hash."""
        if signed.method == "eip3009":
            return self.send(eip3009_call(self.devnet, signed))
        return self.send(permit2_call(self.devnet, signed, amount))


def eip3009_call(devnet: Devnet, signed: SignedPayment) -> Any:
    auth = signed.payload["authorization"]
    token = devnet.contract("TestUSDC", signed.requirement.asset)
    return token.get_function_by_signature(
        "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,bytes)"
    )(
        auth["from"],
        auth["to"],
        int(auth["value"]),
        int(auth["validAfter"]),
        int(auth["validBefore"]),
        bytes.fromhex(auth["nonce"][2:]),
        bytes.fromhex(signed.payload["signature"][2:]),
    )


def permit2_call(devnet: Devnet, signed: SignedPayment, amount: int | None) -> Any:
    auth = signed.payload["permit2Authorization"]
    permit = ((auth["permitted"]["token"], int(auth["permitted"]["amount"])), int(auth["nonce"]), int(auth["deadline"]))
    witness = tuple(int(value) if key == "validAfter" else value for key, value in auth["witness"].items())
    signature = bytes.fromhex(signed.payload["signature"][2:])
    if signed.requirement.scheme == "upto":
        proxy = devnet.contract("X402UptoPermit2Proxy", devnet.upto_proxy)
        charge = signed.amount if amount is None else amount
        return proxy.functions.settle(permit, charge, signed.payer, witness, signature)
    proxy = devnet.contract("X402ExactPermit2Proxy", devnet.exact_proxy)
    return proxy.functions.settle(permit, signed.payer, witness, signature)


def deploy_token(devnet: Devnet, holder: str) -> str:
    """Another TestUSDC (same name, same events) at a new address, with 1,000 tokens minted to `holder`."""
    web3 = devnet.web3()
    artifact = load_artifact("TestUSDC")
    factory = web3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    deployer = devnet.deployer.address
    receipt = web3.eth.wait_for_transaction_receipt(factory.constructor(deployer).transact({"from": deployer}))
    token: Contract = devnet.contract("TestUSDC", receipt["contractAddress"])
    web3.eth.wait_for_transaction_receipt(token.functions.mint(holder, 10**9).transact({"from": deployer}))
    return str(receipt["contractAddress"])


class CountingProvider(HTTPProvider):
    """An HTTPProvider that counts its HTTP requests (a batch is one)."""

    posts = 0

    def make_request(self, method: Any, params: Any) -> Any:
        self.posts += 1
        return super().make_request(method, params)

    def make_batch_request(self, requests: Any) -> Any:
        self.posts += 1
        return super().make_batch_request(requests)


class AsyncCountingProvider(AsyncHTTPProvider):
    """`CountingProvider` for AsyncWeb3."""

    posts = 0

    async def make_request(self, method: Any, params: Any) -> Any:
        self.posts += 1
        return await super().make_request(method, params)

    async def make_batch_request(self, requests: Any) -> Any:
        self.posts += 1
        return await super().make_batch_request(requests)


def claim_of(signed: SignedPayment, tx_hash: str | None, amount: int | None = None) -> Claim:
    return Claim.from_signed(signed, amount, tx_hash)
