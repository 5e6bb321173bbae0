"""TestUSDC on anvil: EIP-3009 and EIP-2612 signed in Python, checked by the contract; and Multicall3.

Signatures come from eth-account, so these tests also cross-check our typed data against an independent
implementation (the Solidity contract). Revert reasons are Circle FiatToken's texts, compared exactly.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from eth_abi import decode, encode
from eth_account.datastructures import SignedMessage
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError
from web3.types import TxReceipt

from x402pay._protocol.addresses import MULTICALL3_ADDRESS
from x402pay.testing import Devnet
from x402pay.testing._devnet import DEFAULT_PAYER_USDC

pytestmark = pytest.mark.chain

AUTH_FIELDS = [
    {"name": "from", "type": "address"},
    {"name": "to", "type": "address"},
    {"name": "value", "type": "uint256"},
    {"name": "validAfter", "type": "uint256"},
    {"name": "validBefore", "type": "uint256"},
    {"name": "nonce", "type": "bytes32"},
]
CANCEL_FIELDS = [{"name": "authorizer", "type": "address"}, {"name": "nonce", "type": "bytes32"}]
PERMIT_FIELDS = [
    {"name": "owner", "type": "address"},
    {"name": "spender", "type": "address"},
    {"name": "value", "type": "uint256"},
    {"name": "nonce", "type": "uint256"},
    {"name": "deadline", "type": "uint256"},
]
TRANSFER_VRS = "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32)"
TRANSFER_BYTES = "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,bytes)"
RECEIVE_VRS = "receiveWithAuthorization(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32)"
RECEIVE_BYTES = "receiveWithAuthorization(address,address,uint256,uint256,uint256,bytes32,bytes)"
CANCEL_VRS = "cancelAuthorization(address,bytes32,uint8,bytes32,bytes32)"
CANCEL_BYTES = "cancelAuthorization(address,bytes32,bytes)"
AMOUNT = 12_345


# --- helpers -------------------------------------------------------------------------------------------------


def send(web3: Web3, sender: LocalAccount, call: Any) -> TxReceipt:
    """Sign `call` as a raw transaction from `sender`, send it and return the successful receipt.

    `build_transaction` estimates gas first, so a reverting call raises ContractLogicError here.
    """
    tx = call.build_transaction({"from": sender.address, "nonce": web3.eth.get_transaction_count(sender.address)})
    receipt = web3.eth.wait_for_transaction_receipt(
        web3.eth.send_raw_transaction(sender.sign_transaction(tx).raw_transaction)
    )
    assert receipt["status"] == 1
    return receipt


def reverts(reason: str, web3: Web3, sender: LocalAccount, call: Any) -> None:
    with pytest.raises(ContractLogicError) as caught:
        send(web3, sender, call)
    assert caught.value.message == f"execution reverted: {reason}"


def logs_of(token: Contract, receipt: TxReceipt, event_signature: str) -> list[Any]:
    """Decode the receipt's logs that `token` emitted with this event signature (address checked first)."""
    topic = keccak(text=event_signature)
    event = token.events[event_signature.split("(")[0]]()
    return [
        event.process_log(log)
        for log in receipt["logs"]
        if log["address"] == token.address and log["topics"][0] == topic
    ]


def domain(devnet: Devnet) -> dict[str, Any]:
    return {"name": "USD Coin", "version": "2", "chainId": devnet.chain_id, "verifyingContract": devnet.usdc}


def sign(devnet: Devnet, signer: LocalAccount, primary: str, message: dict[str, Any]) -> SignedMessage:
    fields = {"CancelAuthorization": CANCEL_FIELDS, "Permit": PERMIT_FIELDS}.get(primary, AUTH_FIELDS)
    return signer.sign_typed_data(domain(devnet), {primary: fields}, message)


def authorization(devnet: Devnet, payer: LocalAccount, *, valid_after: int | None = None, lifetime: int = 300) -> dict:
    """A fresh authorization from `payer` to the payee, in the x402 client's window (now - 600, now + lifetime)."""
    now = devnet.chain_time()
    return {
        "from": payer.address,
        "to": devnet.payee.address,
        "value": AMOUNT,
        "validAfter": now - 600 if valid_after is None else valid_after,
        "validBefore": now + lifetime,
        "nonce": os.urandom(32),
    }


def vrs(signed: SignedMessage) -> list[Any]:
    return [signed.v, signed.r.to_bytes(32, "big"), signed.s.to_bytes(32, "big")]


def signature_args(function_signature: str, signed: SignedMessage) -> list[Any]:
    return [signed.signature] if function_signature.endswith(",bytes)") else vrs(signed)


def auth_call(token: Contract, function_signature: str, message: dict[str, Any], signed: SignedMessage) -> Any:
    """The contract call that submits `message` with `signed`, in the v,r,s or the bytes form of the signature."""
    args = [message[field["name"]] for field in AUTH_FIELDS]
    return token.get_function_by_signature(function_signature)(*args, *signature_args(function_signature, signed))


@pytest.fixture
def token(x402pay_chain: Devnet) -> Contract:
    return x402pay_chain.contract("TestUSDC", x402pay_chain.usdc)


# --- token facts ---------------------------------------------------------------------------------------------


def test_token_facts(token: Contract, x402pay_chain: Devnet) -> None:
    assert token.functions.name().call() == "USD Coin"
    assert token.functions.symbol().call() == "USDC"
    assert token.functions.decimals().call() == 6
    assert token.functions.version().call() == "2"
    assert token.functions.minter().call() == x402pay_chain.deployer.address
    fields, name, version, chain_id, verifying_contract, _, _ = token.functions.eip712Domain().call()
    assert (fields, name, version, chain_id, verifying_contract) == (
        b"\x0f",
        "USD Coin",
        "2",
        x402pay_chain.chain_id,
        x402pay_chain.usdc,
    )


def test_typehash_constants_are_circles(token: Contract) -> None:
    # FiatTokenV2's published constants (circlefin/stablecoin-evm contracts/v2/EIP3009.sol and EIP2612.sol).
    expected = {
        "TRANSFER_WITH_AUTHORIZATION_TYPEHASH": "7c7c6cdb67a18743f49ec6fa9b35f50d52ed05cbed4cc592e13b44501c1a2267",
        "RECEIVE_WITH_AUTHORIZATION_TYPEHASH": "d099cc98ef71107a616c4f0f941f04c322d8e254fe26b3c6668db87aae413de8",
        "CANCEL_AUTHORIZATION_TYPEHASH": "158b0a9edf7a828aad02f63cd515c68ef2f50ba807396f6d12842833a1597429",
        "PERMIT_TYPEHASH": "6e71edae12b1b97f4d1f60370fef10105fa2faae0126114a169c64845d6126c9",
    }
    for constant, value in expected.items():
        assert token.functions[constant]().call().hex() == value, constant


def test_domain_separator_matches_eth_account(token: Contract, x402pay_chain: Devnet) -> None:
    message = authorization(x402pay_chain, x402pay_chain.payers[0])
    encoded = encode_typed_data(domain(x402pay_chain), {"TransferWithAuthorization": AUTH_FIELDS}, message)
    on_chain = token.functions.DOMAIN_SEPARATOR().call()
    assert on_chain == encoded.header
    other_chain = encode_typed_data(
        {**domain(x402pay_chain), "chainId": 1}, {"TransferWithAuthorization": AUTH_FIELDS}, message
    )
    assert on_chain != other_chain.header


def test_domain_separator_follows_a_chain_id_change(token: Contract, x402pay_chain: Devnet) -> None:
    web3 = x402pay_chain.web3()
    message = authorization(x402pay_chain, x402pay_chain.payers[0])
    web3.provider.make_request("anvil_setChainId", [4242])
    try:
        on_chain = token.functions.DOMAIN_SEPARATOR().call()
    finally:
        web3.provider.make_request("anvil_setChainId", [x402pay_chain.chain_id])
    types = {"TransferWithAuthorization": AUTH_FIELDS}
    expected = encode_typed_data({**domain(x402pay_chain), "chainId": 4242}, types, message)
    assert on_chain == expected.header
    assert web3.eth.chain_id == x402pay_chain.chain_id


def test_only_the_minter_mints(token: Contract, x402pay_chain: Devnet, x402pay_web3: Web3) -> None:
    payee = x402pay_chain.payee
    reverts("FiatToken: caller is not a minter", x402pay_web3, payee, token.functions.mint(payee.address, 1))
    send(x402pay_web3, x402pay_chain.deployer, token.functions.mint(payee.address, 7))
    assert token.functions.balanceOf(payee.address).call() == 7
    assert token.functions.totalSupply().call() == DEFAULT_PAYER_USDC * len(x402pay_chain.payers) + 7


# --- EIP-3009 transferWithAuthorization ----------------------------------------------------------------------


@pytest.mark.parametrize("form", [TRANSFER_VRS, TRANSFER_BYTES], ids=["v-r-s", "bytes"])
def test_transfer_with_authorization_moves_exactly_the_amount(
    form: str, token: Contract, x402pay_chain: Devnet, x402pay_web3: Web3
) -> None:
    payer, payee, facilitator = x402pay_chain.payers[0], x402pay_chain.payee, x402pay_chain.facilitator
    message = authorization(x402pay_chain, payer)
    signed = sign(x402pay_chain, payer, "TransferWithAuthorization", message)
    assert token.functions.authorizationState(payer.address, message["nonce"]).call() is False

    receipt = send(x402pay_web3, facilitator, auth_call(token, form, message, signed))

    assert token.functions.balanceOf(payer.address).call() == DEFAULT_PAYER_USDC - AMOUNT
    assert token.functions.balanceOf(payee.address).call() == AMOUNT
    assert token.functions.balanceOf(facilitator.address).call() == 0
    assert token.functions.authorizationState(payer.address, message["nonce"]).call() is True
    [used] = logs_of(token, receipt, "AuthorizationUsed(address,bytes32)")
    assert (used.args.authorizer, used.args.nonce) == (payer.address, message["nonce"])
    [transfer] = logs_of(token, receipt, "Transfer(address,address,uint256)")
    assert (transfer.args["from"], transfer.args.to, transfer.args.value) == (payer.address, payee.address, AMOUNT)


def test_a_bytes_signature_and_a_v_r_s_signature_are_the_same_authorization(
    token: Contract, x402pay_chain: Devnet, x402pay_web3: Web3
) -> None:
    payer = x402pay_chain.payers[0]
    message = authorization(x402pay_chain, payer)
    signed = sign(x402pay_chain, payer, "TransferWithAuthorization", message)
    send(x402pay_web3, x402pay_chain.facilitator, auth_call(token, TRANSFER_BYTES, message, signed))
    replay = auth_call(token, TRANSFER_VRS, message, signed)
    reverts("FiatTokenV2: authorization is used or canceled", x402pay_web3, x402pay_chain.facilitator, replay)


def test_replayed_authorization_reverts(token: Contract, x402pay_chain: Devnet, x402pay_web3: Web3) -> None:
    payer = x402pay_chain.payers[0]
    message = authorization(x402pay_chain, payer)
    call = auth_call(token, TRANSFER_VRS, message, sign(x402pay_chain, payer, "TransferWithAuthorization", message))
    send(x402pay_web3, x402pay_chain.facilitator, call)
    reverts("FiatTokenV2: authorization is used or canceled", x402pay_web3, x402pay_chain.facilitator, call)
    assert token.functions.balanceOf(x402pay_chain.payee.address).call() == AMOUNT


def test_expired_authorization_reverts(token: Contract, x402pay_chain: Devnet, x402pay_web3: Web3) -> None:
    payer = x402pay_chain.payers[0]
    message = authorization(x402pay_chain, payer, lifetime=60)
    call = auth_call(token, TRANSFER_BYTES, message, sign(x402pay_chain, payer, "TransferWithAuthorization", message))
    x402pay_chain.increase_time(61)
    reverts("FiatTokenV2: authorization is expired", x402pay_web3, x402pay_chain.facilitator, call)
    assert token.functions.authorizationState(payer.address, message["nonce"]).call() is False


def test_not_yet_valid_authorization_reverts_until_valid_after(
    token: Contract, x402pay_chain: Devnet, x402pay_web3: Web3
) -> None:
    payer = x402pay_chain.payers[0]
    message = authorization(x402pay_chain, payer, valid_after=x402pay_chain.chain_time() + 120, lifetime=3600)
    call = auth_call(token, TRANSFER_VRS, message, sign(x402pay_chain, payer, "TransferWithAuthorization", message))
    reverts("FiatTokenV2: authorization is not yet valid", x402pay_web3, x402pay_chain.facilitator, call)
    x402pay_chain.increase_time(121)
    send(x402pay_web3, x402pay_chain.facilitator, call)
    assert token.functions.balanceOf(x402pay_chain.payee.address).call() == AMOUNT


def status_when_mined_at(web3: Web3, sender: LocalAccount, call: Any, timestamp: int) -> int:
    """Send `call` (gas fixed, so nothing is estimated) in a block stamped exactly `timestamp`; return its status."""
    web3.provider.make_request("evm_setNextBlockTimestamp", [timestamp])
    tx = call.build_transaction(
        {"from": sender.address, "nonce": web3.eth.get_transaction_count(sender.address), "gas": 200_000}
    )
    receipt = web3.eth.wait_for_transaction_receipt(
        web3.eth.send_raw_transaction(sender.sign_transaction(tx).raw_transaction)
    )
    assert web3.eth.get_block(receipt["blockNumber"])["timestamp"] == timestamp
    return receipt["status"]


def test_the_time_window_excludes_both_ends(token: Contract, x402pay_chain: Devnet, x402pay_web3: Web3) -> None:
    # FiatToken semantics: valid only when validAfter < block.timestamp < validBefore.
    payer, facilitator = x402pay_chain.payers[0], x402pay_chain.facilitator
    start = x402pay_chain.chain_time()
    calls = []
    for _ in range(3):
        message = {**authorization(x402pay_chain, payer), "validAfter": start + 100, "validBefore": start + 200}
        calls.append(
            auth_call(token, TRANSFER_VRS, message, sign(x402pay_chain, payer, "TransferWithAuthorization", message))
        )
    first, second, third = calls
    assert status_when_mined_at(x402pay_web3, facilitator, first, start + 100) == 0
    assert status_when_mined_at(x402pay_web3, facilitator, first, start + 101) == 1
    assert status_when_mined_at(x402pay_web3, facilitator, second, start + 199) == 1
    assert status_when_mined_at(x402pay_web3, facilitator, third, start + 200) == 0
    assert token.functions.balanceOf(x402pay_chain.payee.address).call() == 2 * AMOUNT


@pytest.mark.parametrize("tamper", ["other signer", "other value", "other chain", "receive type"])
def test_a_signature_for_anything_else_reverts(
    tamper: str, token: Contract, x402pay_chain: Devnet, x402pay_web3: Web3
) -> None:
    payer, stranger = x402pay_chain.payers[0], x402pay_chain.payers[1]
    message = authorization(x402pay_chain, payer)
    if tamper == "other signer":
        signed = sign(x402pay_chain, stranger, "TransferWithAuthorization", message)
    elif tamper == "other value":
        signed = sign(x402pay_chain, payer, "TransferWithAuthorization", {**message, "value": AMOUNT + 1})
    elif tamper == "other chain":
        signed = payer.sign_typed_data(
            {**domain(x402pay_chain), "chainId": 8453}, {"TransferWithAuthorization": AUTH_FIELDS}, message
        )
    else:
        signed = sign(x402pay_chain, payer, "ReceiveWithAuthorization", message)
    call = auth_call(token, TRANSFER_VRS, message, signed)
    reverts("FiatTokenV2: invalid signature", x402pay_web3, x402pay_chain.facilitator, call)
    assert token.functions.balanceOf(payer.address).call() == DEFAULT_PAYER_USDC


# --- EIP-3009 receiveWithAuthorization -----------------------------------------------------------------------


@pytest.mark.parametrize("form", [RECEIVE_VRS, RECEIVE_BYTES], ids=["v-r-s", "bytes"])
def test_receive_with_authorization_only_by_the_payee(
    form: str, token: Contract, x402pay_chain: Devnet, x402pay_web3: Web3
) -> None:
    payer, payee = x402pay_chain.payers[0], x402pay_chain.payee
    message = authorization(x402pay_chain, payer)
    call = auth_call(token, form, message, sign(x402pay_chain, payer, "ReceiveWithAuthorization", message))
    reverts("FiatTokenV2: caller must be the payee", x402pay_web3, x402pay_chain.facilitator, call)

    receipt = send(x402pay_web3, payee, call)

    assert token.functions.balanceOf(payee.address).call() == AMOUNT
    assert token.functions.balanceOf(payer.address).call() == DEFAULT_PAYER_USDC - AMOUNT
    [used] = logs_of(token, receipt, "AuthorizationUsed(address,bytes32)")
    assert (used.args.authorizer, used.args.nonce) == (payer.address, message["nonce"])


def test_a_transfer_signature_does_not_work_for_receive(
    token: Contract, x402pay_chain: Devnet, x402pay_web3: Web3
) -> None:
    payer = x402pay_chain.payers[0]
    message = authorization(x402pay_chain, payer)
    call = auth_call(token, RECEIVE_VRS, message, sign(x402pay_chain, payer, "TransferWithAuthorization", message))
    reverts("FiatTokenV2: invalid signature", x402pay_web3, x402pay_chain.payee, call)


# --- EIP-3009 cancelAuthorization ----------------------------------------------------------------------------


@pytest.mark.parametrize("form", [CANCEL_VRS, CANCEL_BYTES], ids=["v-r-s", "bytes"])
def test_cancel_authorization_blocks_its_use(
    form: str, token: Contract, x402pay_chain: Devnet, x402pay_web3: Web3
) -> None:
    payer, facilitator = x402pay_chain.payers[0], x402pay_chain.facilitator
    message = authorization(x402pay_chain, payer)
    transfer = auth_call(token, TRANSFER_VRS, message, sign(x402pay_chain, payer, "TransferWithAuthorization", message))
    cancel_signed = sign(
        x402pay_chain, payer, "CancelAuthorization", {"authorizer": payer.address, "nonce": message["nonce"]}
    )
    cancel = token.get_function_by_signature(form)(
        payer.address, message["nonce"], *signature_args(form, cancel_signed)
    )

    receipt = send(x402pay_web3, facilitator, cancel)

    [canceled] = logs_of(token, receipt, "AuthorizationCanceled(address,bytes32)")
    assert (canceled.args.authorizer, canceled.args.nonce) == (payer.address, message["nonce"])
    assert logs_of(token, receipt, "AuthorizationUsed(address,bytes32)") == []
    assert token.functions.authorizationState(payer.address, message["nonce"]).call() is True
    reverts("FiatTokenV2: authorization is used or canceled", x402pay_web3, facilitator, transfer)
    reverts("FiatTokenV2: authorization is used or canceled", x402pay_web3, facilitator, cancel)
    assert token.functions.balanceOf(payer.address).call() == DEFAULT_PAYER_USDC


def test_cancel_signed_by_someone_else_reverts(token: Contract, x402pay_chain: Devnet, x402pay_web3: Web3) -> None:
    payer, stranger = x402pay_chain.payers[0], x402pay_chain.payers[1]
    nonce = os.urandom(32)
    signed = sign(x402pay_chain, stranger, "CancelAuthorization", {"authorizer": payer.address, "nonce": nonce})
    cancel = token.get_function_by_signature(CANCEL_BYTES)(payer.address, nonce, signed.signature)
    reverts("FiatTokenV2: invalid signature", x402pay_web3, x402pay_chain.facilitator, cancel)
    assert token.functions.authorizationState(payer.address, nonce).call() is False


# --- EIP-2612 permit -----------------------------------------------------------------------------------------


def permit_call(token: Contract, message: dict[str, Any], signed: SignedMessage) -> Any:
    args = [message[name] for name in ("owner", "spender", "value", "deadline")]
    return token.functions.permit(*args, *vrs(signed))


def permit_message(devnet: Devnet, owner: LocalAccount, nonce: int, *, lifetime: int = 300) -> dict[str, Any]:
    return {
        "owner": owner.address,
        "spender": devnet.facilitator.address,
        "value": 5_000_000,
        "nonce": nonce,
        "deadline": devnet.chain_time() + lifetime,
    }


def test_permit_sets_the_allowance_and_uses_the_nonce(
    token: Contract, x402pay_chain: Devnet, x402pay_web3: Web3
) -> None:
    owner, spender = x402pay_chain.payers[0], x402pay_chain.facilitator
    assert token.functions.nonces(owner.address).call() == 0
    message = permit_message(x402pay_chain, owner, nonce=0)
    call = permit_call(token, message, sign(x402pay_chain, owner, "Permit", message))

    receipt = send(x402pay_web3, x402pay_chain.payee, call)

    assert token.functions.allowance(owner.address, spender.address).call() == 5_000_000
    assert token.functions.nonces(owner.address).call() == 1
    [approval] = logs_of(token, receipt, "Approval(address,address,uint256)")
    assert (approval.args.owner, approval.args.spender, approval.args.value) == (
        owner.address,
        spender.address,
        5_000_000,
    )
    reverts("EIP2612: invalid signature", x402pay_web3, x402pay_chain.payee, call)  # the nonce has moved on


def test_expired_permit_reverts(token: Contract, x402pay_chain: Devnet, x402pay_web3: Web3) -> None:
    owner = x402pay_chain.payers[0]
    message = permit_message(x402pay_chain, owner, nonce=0, lifetime=30)
    call = permit_call(token, message, sign(x402pay_chain, owner, "Permit", message))
    x402pay_chain.increase_time(31)
    reverts("FiatTokenV2: permit is expired", x402pay_web3, x402pay_chain.payee, call)
    assert token.functions.nonces(owner.address).call() == 0


def test_permit_signed_by_someone_else_reverts(token: Contract, x402pay_chain: Devnet, x402pay_web3: Web3) -> None:
    owner, stranger = x402pay_chain.payers[0], x402pay_chain.payers[1]
    message = permit_message(x402pay_chain, owner, nonce=0)
    call = permit_call(token, message, sign(x402pay_chain, stranger, "Permit", message))
    reverts("EIP2612: invalid signature", x402pay_web3, x402pay_chain.payee, call)
    assert token.functions.allowance(owner.address, x402pay_chain.facilitator.address).call() == 0


# --- Multicall3 at its canonical address ---------------------------------------------------------------------


def balance_call(token: Contract, account: str, *, allow_failure: bool = False) -> tuple[str, bool, bytes]:
    return (token.address, allow_failure, bytes.fromhex(token.encode_abi("balanceOf", [account])[2:]))


def test_multicall3_aggregate3_reads_balances(token: Contract, x402pay_chain: Devnet) -> None:
    multicall = x402pay_chain.contract("Multicall3", MULTICALL3_ADDRESS)
    payer, payee = x402pay_chain.payers[0], x402pay_chain.payee
    send(x402pay_chain.web3(), x402pay_chain.deployer, token.functions.mint(payee.address, 42))

    results = multicall.functions.aggregate3(
        [balance_call(token, payer.address), balance_call(token, payee.address)]
    ).call()

    assert [(ok, decode(["uint256"], data)[0]) for ok, data in results] == [(True, DEFAULT_PAYER_USDC), (True, 42)]
    assert multicall.functions.getChainId().call() == x402pay_chain.chain_id
    assert multicall.functions.getCurrentBlockTimestamp().call() >= x402pay_chain.chain_time()


def test_multicall3_allow_failure(token: Contract, x402pay_chain: Devnet) -> None:
    multicall = x402pay_chain.contract("Multicall3", MULTICALL3_ADDRESS)
    # Multicall3 is not the minter, so this inner call reverts with a reason.
    failing_mint = bytes.fromhex(token.encode_abi("mint", [x402pay_chain.payee.address, 1])[2:])
    reads = [balance_call(token, x402pay_chain.payers[0].address)]

    ok, failed = multicall.functions.aggregate3([*reads, (token.address, True, failing_mint)]).call()

    assert ok[0] is True
    assert failed[0] is False
    error_string_selector = keccak(text="Error(string)")[:4]
    assert failed[1] == error_string_selector + encode(["string"], ["FiatToken: caller is not a minter"])
    with pytest.raises(ContractLogicError) as caught:
        multicall.functions.aggregate3([*reads, (token.address, False, failing_mint)]).call()
    assert caught.value.message == "execution reverted: Multicall3: call failed"
