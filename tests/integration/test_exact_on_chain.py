"""Payments made by Wallet + sign_exact settle on a real chain, submitted from their wire form by a facilitator.

Each payload goes through JSON first, and the contract call is built from that JSON only, as a facilitator does:
the Solidity contracts (TestUSDC's EIP-3009, Permit2 and the x402 exact proxy) are the independent verifier.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractCustomError, ContractLogicError
from web3.types import TxReceipt

from x402pay._protocol.models import PaymentRequirements
from x402pay._schemes.exact import SignedPayment, sign_exact
from x402pay._wallet import Wallet
from x402pay.testing import Devnet

pytestmark = pytest.mark.chain

AMOUNT = 123_456
LIFETIME = 120
TRANSFER_VRS = "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32)"
TRANSFER_BYTES = "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,bytes)"


# -- helpers ---------------------------------------------------------------------------------------------------


def send(web3: Web3, sender: LocalAccount, call: Any) -> TxReceipt:
    """Sign `call` as a raw transaction from `sender` and wait for a successful receipt (reverts raise)."""
    tx = call.build_transaction({"from": sender.address, "nonce": web3.eth.get_transaction_count(sender.address)})
    receipt = web3.eth.wait_for_transaction_receipt(
        web3.eth.send_raw_transaction(sender.sign_transaction(tx).raw_transaction)
    )
    assert receipt["status"] == 1
    return receipt


def requirement(devnet: Devnet, **fields: Any) -> PaymentRequirements:
    wire = {
        "scheme": "exact",
        "network": devnet.network,
        "amount": str(AMOUNT),
        "asset": devnet.usdc,
        "payTo": devnet.payee.address,
        "maxTimeoutSeconds": 60,
        **fields,
    }
    return PaymentRequirements.model_validate(wire)


def pay(devnet: Devnet, payer: LocalAccount, req: PaymentRequirements, **options: Any) -> dict[str, Any]:
    """Sign `req` with a Wallet over `payer` at chain time; return the payload as a facilitator would read it."""
    signed: SignedPayment = sign_exact(
        Wallet(payer), req, **{"now": devnet.chain_time(), "max_lifetime": LIFETIME, **options}
    )
    wire: dict[str, Any] = json.loads(json.dumps(signed.payload))
    return wire


def signature_bytes(payload: dict[str, Any]) -> bytes:
    return bytes.fromhex(payload["signature"].removeprefix("0x"))


def eip3009_call(token: Contract, form: str, payload: dict[str, Any]) -> Any:
    auth = payload["authorization"]
    args = [
        auth["from"],
        auth["to"],
        int(auth["value"]),
        int(auth["validAfter"]),
        int(auth["validBefore"]),
        bytes.fromhex(auth["nonce"].removeprefix("0x")),
    ]
    signature = signature_bytes(payload)
    if form == TRANSFER_BYTES:
        return token.get_function_by_signature(form)(*args, signature)
    return token.get_function_by_signature(form)(*args, signature[64], signature[:32], signature[32:64])


def permit2_call(proxy: Contract, payload: dict[str, Any]) -> Any:
    auth = payload["permit2Authorization"]
    permit = (
        (auth["permitted"]["token"], int(auth["permitted"]["amount"])),
        int(auth["nonce"]),
        int(auth["deadline"]),
    )
    witness = (auth["witness"]["to"], int(auth["witness"]["validAfter"]))
    return proxy.functions.settle(permit, auth["from"], witness, signature_bytes(payload))


def balances(token: Contract, *accounts: str) -> list[int]:
    return [token.functions.balanceOf(account).call() for account in accounts]


# -- fixtures --------------------------------------------------------------------------------------------------


@pytest.fixture
def token(x402pay_chain: Devnet) -> Contract:
    return x402pay_chain.contract("TestUSDC", x402pay_chain.usdc)


@pytest.fixture
def proxy(x402pay_chain: Devnet) -> Contract:
    return x402pay_chain.contract("X402ExactPermit2Proxy", x402pay_chain.exact_proxy)


# -- EIP-3009 --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", [TRANSFER_BYTES, TRANSFER_VRS], ids=["bytes", "v-r-s"])
@pytest.mark.parametrize("extra", [None, {"name": "USD Coin", "version": "2"}], ids=["known asset", "extra"])
def test_eip3009_payment_settles_for_exactly_the_amount(
    x402pay_chain: Devnet, x402pay_payer: LocalAccount, token: Contract, form: str, extra: dict[str, str] | None
) -> None:
    payee = x402pay_chain.payee.address
    payload = pay(x402pay_chain, x402pay_payer, requirement(x402pay_chain, extra=extra))
    before = balances(token, x402pay_payer.address, payee)
    send(x402pay_chain.web3(), x402pay_chain.facilitator, eip3009_call(token, form, payload))
    assert balances(token, x402pay_payer.address, payee) == [before[0] - AMOUNT, before[1] + AMOUNT]
    nonce = bytes.fromhex(payload["authorization"]["nonce"][2:])
    assert token.functions.authorizationState(x402pay_payer.address, nonce).call() is True


def test_eip3009_payment_to_a_lower_case_payee_settles(
    x402pay_chain: Devnet, x402pay_payer: LocalAccount, token: Contract
) -> None:
    payee = x402pay_chain.payee.address
    req = requirement(x402pay_chain, payTo=payee.lower(), asset=x402pay_chain.usdc.lower())
    payload = pay(x402pay_chain, x402pay_payer, req)
    send(x402pay_chain.web3(), x402pay_chain.facilitator, eip3009_call(token, TRANSFER_BYTES, payload))
    assert balances(token, payee) == [AMOUNT]


def test_eip3009_lifetime_is_capped_on_chain(
    x402pay_chain: Devnet, x402pay_payer: LocalAccount, token: Contract
) -> None:
    ten_years = 10 * 365 * 86_400
    payload = pay(x402pay_chain, x402pay_payer, requirement(x402pay_chain, maxTimeoutSeconds=ten_years))
    x402pay_chain.increase_time(LIFETIME + 1)
    call = eip3009_call(token, TRANSFER_BYTES, payload)
    with pytest.raises(ContractLogicError, match="authorization is expired"):
        send(x402pay_chain.web3(), x402pay_chain.facilitator, call)
    assert balances(token, x402pay_chain.payee.address) == [0]


# -- Permit2 ---------------------------------------------------------------------------------------------------


def test_permit2_payment_settles_through_the_exact_proxy(
    x402pay_chain: Devnet, x402pay_payer: LocalAccount, token: Contract, proxy: Contract
) -> None:
    payee = x402pay_chain.payee.address
    req = requirement(x402pay_chain, extra={"assetTransferMethod": "permit2"})
    payload = pay(x402pay_chain, x402pay_payer, req)
    assert payload["permit2Authorization"]["spender"] == proxy.address
    before = balances(token, x402pay_payer.address, payee)
    send(x402pay_chain.web3(), x402pay_chain.facilitator, permit2_call(proxy, payload))
    assert balances(token, x402pay_payer.address, payee) == [before[0] - AMOUNT, before[1] + AMOUNT]


def test_permit2_payment_settles_only_once(
    x402pay_chain: Devnet, x402pay_payer: LocalAccount, token: Contract, proxy: Contract
) -> None:
    req = requirement(x402pay_chain, extra={"assetTransferMethod": "permit2"})
    call = permit2_call(proxy, pay(x402pay_chain, x402pay_payer, req))
    send(x402pay_chain.web3(), x402pay_chain.facilitator, call)
    with pytest.raises(ContractCustomError):
        send(x402pay_chain.web3(), x402pay_chain.facilitator, call)
    assert balances(token, x402pay_chain.payee.address) == [AMOUNT]


def test_permit2_lifetime_is_capped_on_chain(
    x402pay_chain: Devnet, x402pay_payer: LocalAccount, token: Contract, proxy: Contract
) -> None:
    req = requirement(x402pay_chain, maxTimeoutSeconds=10**9, extra={"assetTransferMethod": "permit2"})
    payload = pay(x402pay_chain, x402pay_payer, req)
    x402pay_chain.increase_time(LIFETIME + 1)
    deadline = int(payload["permit2Authorization"]["deadline"])
    with pytest.raises(ContractCustomError) as caught:
        send(x402pay_chain.web3(), x402pay_chain.facilitator, permit2_call(proxy, payload))
    expected = Web3.keccak(text="SignatureExpired(uint256)")[:4] + deadline.to_bytes(32, "big")
    assert bytes.fromhex(str(caught.value.data).removeprefix("0x")) == expected
    assert balances(token, x402pay_chain.payee.address) == [0]
