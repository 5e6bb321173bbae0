"""The Permit2 contract and the x402 exact/upto proxies, driven by signatures made in Python (eth-account)."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.exceptions import ContractCustomError

from x402pay.testing import Devnet

pytestmark = pytest.mark.chain

AMOUNT = 1_000_000  # 1 USDC
# Literals from reference/x402-protocol.md sections 4.2 and 5.
EXACT_WITNESS_TYPE_STRING = (
    "Witness witness)TokenPermissions(address token,uint256 amount)Witness(address to,uint256 validAfter)"
)
UPTO_WITNESS_TYPE_STRING = (
    "Witness witness)TokenPermissions(address token,uint256 amount)"
    "Witness(address to,address facilitator,uint256 validAfter)"
)
EXACT_WITNESS_TYPEHASH = "0xd97b3239a7f32295517bd14cb074edfdd188dfe5eb42f802bb26d4fd1eb12c37"
UPTO_WITNESS_TYPEHASH = "0xd4171c445a74218b01d4fd8af34ff1106580ea1e36ff837e64484bfaa2253b75"

TOKEN_PERMISSIONS = [{"name": "token", "type": "address"}, {"name": "amount", "type": "uint256"}]
EXACT_WITNESS = [{"name": "to", "type": "address"}, {"name": "validAfter", "type": "uint256"}]
UPTO_WITNESS = [
    {"name": "to", "type": "address"},
    {"name": "facilitator", "type": "address"},
    {"name": "validAfter", "type": "uint256"},
]
PERMIT2_DOMAIN_TYPE = [
    {"name": "name", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]


# -- helpers ---------------------------------------------------------------------------------------------------


def chain_now(web3: Web3) -> int:
    return int(web3.eth.get_block("latest")["timestamp"])


def advance(web3: Web3, seconds: int) -> None:
    web3.provider.make_request("evm_increaseTime", [seconds])
    web3.provider.make_request("evm_mine", [])


def send(web3: Web3, sender: LocalAccount, call: Any) -> Any:
    """Sign and send `call` from `sender`; a revert surfaces from gas estimation as ContractCustomError."""
    tx = call.build_transaction({"from": sender.address, "nonce": web3.eth.get_transaction_count(sender.address)})
    receipt = web3.eth.wait_for_transaction_receipt(
        web3.eth.send_raw_transaction(sender.sign_transaction(tx).raw_transaction)
    )
    assert receipt["status"] == 1
    return receipt


def reverts_with(signature: str, sender: LocalAccount, web3: Web3, call: Any) -> bytes:
    """Assert that sending `call` reverts with custom error `signature`; return the error's argument bytes."""
    with pytest.raises(ContractCustomError) as caught:
        send(web3, sender, call)
    data = bytes.fromhex(str(caught.value.data).removeprefix("0x"))
    assert data[:4] == Web3.keccak(text=signature)[:4], f"expected {signature}, got 0x{data.hex()}"
    return data[4:]


def emitted(receipt: Any, address: str, event_signature: str) -> bool:
    topic = Web3.keccak(text=event_signature)
    return any(log["address"] == address and log["topics"][0] == topic for log in receipt["logs"])


def permit2_domain(devnet: Devnet, verifying_contract: str | None = None) -> dict[str, Any]:
    return {"name": "Permit2", "chainId": devnet.chain_id, "verifyingContract": verifying_contract or devnet.permit2}


def sign_permit(
    devnet: Devnet, payer: LocalAccount, spender: str, witness: dict[str, Any], **overrides: int
) -> tuple[tuple[Any, ...], bytes]:
    """Sign a PermitWitnessTransferFrom; the witness type (exact or upto) follows from the witness's fields."""
    message = {
        "permitted": {"token": devnet.usdc, "amount": overrides.get("amount", AMOUNT)},
        "spender": spender,
        "nonce": overrides.get("nonce", secrets.randbits(256)),
        "deadline": overrides.get("deadline", chain_now(devnet.web3()) + 600),
        "witness": witness,
    }
    types = {
        "EIP712Domain": PERMIT2_DOMAIN_TYPE,
        "PermitWitnessTransferFrom": [
            {"name": "permitted", "type": "TokenPermissions"},
            {"name": "spender", "type": "address"},
            {"name": "nonce", "type": "uint256"},
            {"name": "deadline", "type": "uint256"},
            {"name": "witness", "type": "Witness"},
        ],
        "TokenPermissions": TOKEN_PERMISSIONS,
        "Witness": UPTO_WITNESS if "facilitator" in witness else EXACT_WITNESS,
    }
    full = {"types": types, "primaryType": "PermitWitnessTransferFrom", "domain": permit2_domain(devnet)}
    signed = payer.sign_typed_data(full_message={**full, "message": message})
    permit = ((devnet.usdc, message["permitted"]["amount"]), message["nonce"], message["deadline"])
    return permit, signed.signature


def exact_witness(to: str, valid_after: int) -> dict[str, Any]:
    return {"to": to, "validAfter": valid_after}


def upto_witness(devnet: Devnet, valid_after: int) -> dict[str, Any]:
    return {"to": devnet.payee.address, "facilitator": devnet.facilitator.address, "validAfter": valid_after}


def balances(devnet: Devnet, *accounts: str) -> list[int]:
    usdc = devnet.contract("TestUSDC", devnet.usdc)
    return [usdc.functions.balanceOf(account).call() for account in accounts]


def nonce_is_used(devnet: Devnet, owner: str, nonce: int) -> bool:
    word = devnet.contract("Permit2", devnet.permit2).functions.nonceBitmap(owner, nonce >> 8).call()
    return bool(word >> (nonce & 0xFF) & 1)


# -- fixtures --------------------------------------------------------------------------------------------------


@pytest.fixture
def web3(x402pay_chain: Devnet) -> Web3:
    return x402pay_chain.web3()


@pytest.fixture
def payer(x402pay_chain: Devnet) -> LocalAccount:
    return x402pay_chain.payers[0]


@pytest.fixture
def exact(x402pay_chain: Devnet) -> Any:
    return x402pay_chain.contract("X402ExactPermit2Proxy", x402pay_chain.exact_proxy)


@pytest.fixture
def upto(x402pay_chain: Devnet) -> Any:
    return x402pay_chain.contract("X402UptoPermit2Proxy", x402pay_chain.upto_proxy)


@pytest.fixture
def start(web3: Web3) -> int:
    """A validAfter that has passed, backdated as the SDK clients do."""
    return chain_now(web3) - 600


# -- constants and domain --------------------------------------------------------------------------------------


def domain_hash(domain: dict[str, Any]) -> bytes:
    """eth-account's hash of `domain` (its EIP712Domain type is derived from the keys present: no version)."""
    return encode_typed_data(
        domain, {"TokenPermissions": TOKEN_PERMISSIONS}, {"token": domain["verifyingContract"], "amount": 0}
    ).header


def test_domain_separator_is_eip712_permit2_domain_at_the_canonical_address(x402pay_chain: Devnet) -> None:
    expected = domain_hash(permit2_domain(x402pay_chain))
    assert x402pay_chain.chain_id == 31337
    permit2 = x402pay_chain.contract("Permit2", x402pay_chain.permit2)
    assert permit2.functions.DOMAIN_SEPARATOR().call() == expected


def test_domain_separator_follows_the_address_the_code_runs_at(x402pay_chain: Devnet, web3: Web3) -> None:
    elsewhere = Web3.to_checksum_address("0x" + "51" * 20)
    web3.provider.make_request("anvil_setCode", [elsewhere, Web3.to_hex(web3.eth.get_code(x402pay_chain.permit2))])
    expected = domain_hash(permit2_domain(x402pay_chain, elsewhere))
    assert x402pay_chain.contract("Permit2", elsewhere).functions.DOMAIN_SEPARATOR().call() == expected


def test_proxy_constants_match_the_reference(x402pay_chain: Devnet, exact: Any, upto: Any) -> None:
    assert Web3.to_hex(exact.functions.WITNESS_TYPEHASH().call()) == EXACT_WITNESS_TYPEHASH
    assert Web3.to_hex(upto.functions.WITNESS_TYPEHASH().call()) == UPTO_WITNESS_TYPEHASH
    assert exact.functions.WITNESS_TYPE_STRING().call() == EXACT_WITNESS_TYPE_STRING
    assert upto.functions.WITNESS_TYPE_STRING().call() == UPTO_WITNESS_TYPE_STRING
    assert exact.functions.PERMIT2().call() == upto.functions.PERMIT2().call() == x402pay_chain.permit2


# -- exact -----------------------------------------------------------------------------------------------------


def test_exact_settle_moves_the_permitted_amount_to_the_witness_recipient(
    x402pay_chain: Devnet, web3: Web3, payer: LocalAccount, exact: Any, start: int
) -> None:
    payee = x402pay_chain.payee.address
    witness = exact_witness(payee, start)
    permit, signature = sign_permit(x402pay_chain, payer, exact.address, witness)
    before = balances(x402pay_chain, payer.address, payee)
    receipt = send(
        web3, x402pay_chain.facilitator, exact.functions.settle(permit, payer.address, (payee, start), signature)
    )
    assert balances(x402pay_chain, payer.address, payee) == [before[0] - AMOUNT, before[1] + AMOUNT]
    assert emitted(receipt, exact.address, "Settled()")
    assert emitted(receipt, x402pay_chain.usdc, "Transfer(address,address,uint256)")


def test_exact_settle_accepts_a_compact_eip2098_signature(
    x402pay_chain: Devnet, web3: Web3, payer: LocalAccount, exact: Any, start: int
) -> None:
    payee = x402pay_chain.payee.address
    permit, signature = sign_permit(x402pay_chain, payer, exact.address, exact_witness(payee, start))
    r, s, v = signature[:32], int.from_bytes(signature[32:64], "big"), signature[64]
    compact = r + ((v - 27) << 255 | s).to_bytes(32, "big")
    send(web3, x402pay_chain.facilitator, exact.functions.settle(permit, payer.address, (payee, start), compact))
    assert balances(x402pay_chain, payee) == [AMOUNT]


def test_a_different_recipient_than_signed_fails_the_signature(
    x402pay_chain: Devnet, web3: Web3, payer: LocalAccount, exact: Any, start: int
) -> None:
    permit, signature = sign_permit(
        x402pay_chain, payer, exact.address, exact_witness(x402pay_chain.payee.address, start)
    )
    thief = x402pay_chain.facilitator
    call = exact.functions.settle(permit, payer.address, (thief.address, start), signature)
    reverts_with("InvalidSigner()", thief, web3, call)


def test_a_used_nonce_cannot_settle_again(
    x402pay_chain: Devnet, web3: Web3, payer: LocalAccount, exact: Any, start: int
) -> None:
    payee = x402pay_chain.payee.address
    nonce = secrets.randbits(256)
    permit, signature = sign_permit(x402pay_chain, payer, exact.address, exact_witness(payee, start), nonce=nonce)
    call = exact.functions.settle(permit, payer.address, (payee, start), signature)
    assert not nonce_is_used(x402pay_chain, payer.address, nonce)
    send(web3, x402pay_chain.facilitator, call)
    assert nonce_is_used(x402pay_chain, payer.address, nonce)
    assert not nonce_is_used(x402pay_chain, payer.address, nonce ^ 1)
    reverts_with("InvalidNonce()", x402pay_chain.facilitator, web3, call)
    assert balances(x402pay_chain, payee) == [AMOUNT]


def test_an_expired_deadline_is_refused(
    x402pay_chain: Devnet, web3: Web3, payer: LocalAccount, exact: Any, start: int
) -> None:
    payee = x402pay_chain.payee.address
    deadline = chain_now(web3) + 60
    permit, signature = sign_permit(x402pay_chain, payer, exact.address, exact_witness(payee, start), deadline=deadline)
    advance(web3, 120)
    call = exact.functions.settle(permit, payer.address, (payee, start), signature)
    argument = reverts_with("SignatureExpired(uint256)", x402pay_chain.facilitator, web3, call)
    assert int.from_bytes(argument, "big") == deadline


def test_a_payment_before_valid_after_is_too_early_and_succeeds_later(
    x402pay_chain: Devnet, web3: Web3, payer: LocalAccount, exact: Any
) -> None:
    payee = x402pay_chain.payee.address
    valid_after = chain_now(web3) + 3600
    permit, signature = sign_permit(
        x402pay_chain, payer, exact.address, exact_witness(payee, valid_after), deadline=valid_after + 3600
    )
    call = exact.functions.settle(permit, payer.address, (payee, valid_after), signature)
    reverts_with("PaymentTooEarly()", x402pay_chain.facilitator, web3, call)
    advance(web3, 3601)
    send(web3, x402pay_chain.facilitator, call)
    assert balances(x402pay_chain, payee) == [AMOUNT]


def test_a_zero_exact_amount_is_refused(
    x402pay_chain: Devnet, web3: Web3, payer: LocalAccount, exact: Any, start: int
) -> None:
    payee = x402pay_chain.payee.address
    permit, signature = sign_permit(x402pay_chain, payer, exact.address, exact_witness(payee, start), amount=0)
    call = exact.functions.settle(permit, payer.address, (payee, start), signature)
    reverts_with("InvalidAmount()", x402pay_chain.facilitator, web3, call)


@pytest.mark.parametrize(
    ("owner", "to", "error"),
    [("zero", "payee", "InvalidOwner()"), ("payer", "zero", "InvalidDestination()")],
)
def test_zero_owner_or_recipient_is_refused(
    x402pay_chain: Devnet, web3: Web3, payer: LocalAccount, exact: Any, start: int, owner: str, to: str, error: str
) -> None:
    addresses = {"zero": "0x" + "00" * 20, "payer": payer.address, "payee": x402pay_chain.payee.address}
    permit, signature = sign_permit(x402pay_chain, payer, exact.address, exact_witness(addresses[to], start))
    call = exact.functions.settle(permit, addresses[owner], (addresses[to], start), signature)
    reverts_with(error, x402pay_chain.facilitator, web3, call)


def test_invalidated_nonce_blocks_a_signed_permit(
    x402pay_chain: Devnet, web3: Web3, payer: LocalAccount, exact: Any, start: int
) -> None:
    payee = x402pay_chain.payee.address
    nonce = secrets.randbits(256)
    permit, signature = sign_permit(x402pay_chain, payer, exact.address, exact_witness(payee, start), nonce=nonce)
    permit2 = x402pay_chain.contract("Permit2", x402pay_chain.permit2)
    receipt = send(web3, payer, permit2.functions.invalidateUnorderedNonces(nonce >> 8, 1 << (nonce & 0xFF)))
    assert emitted(receipt, permit2.address, "UnorderedNonceInvalidation(address,uint256,uint256)")
    assert nonce_is_used(x402pay_chain, payer.address, nonce)
    call = exact.functions.settle(permit, payer.address, (payee, start), signature)
    reverts_with("InvalidNonce()", x402pay_chain.facilitator, web3, call)


# -- upto ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("amount", [1, AMOUNT // 4, AMOUNT])
def test_upto_settles_any_amount_up_to_the_signed_maximum(
    x402pay_chain: Devnet, web3: Web3, payer: LocalAccount, upto: Any, start: int, amount: int
) -> None:
    payee = x402pay_chain.payee.address
    witness = upto_witness(x402pay_chain, start)
    permit, signature = sign_permit(x402pay_chain, payer, upto.address, witness)
    before = balances(x402pay_chain, payer.address, payee)
    call = upto.functions.settle(permit, amount, payer.address, tuple(witness.values()), signature)
    receipt = send(web3, x402pay_chain.facilitator, call)
    assert balances(x402pay_chain, payer.address, payee) == [before[0] - amount, before[1] + amount]
    assert emitted(receipt, upto.address, "Settled()")


@pytest.mark.parametrize(
    ("amount", "caller", "error"),
    [
        (AMOUNT + 1, "facilitator", "AmountExceedsPermitted()"),
        (0, "facilitator", "InvalidAmount()"),
        (AMOUNT, "payee", "UnauthorizedFacilitator()"),
    ],
)
def test_upto_refuses(
    x402pay_chain: Devnet,
    web3: Web3,
    payer: LocalAccount,
    upto: Any,
    start: int,
    amount: int,
    caller: str,
    error: str,
) -> None:
    witness = upto_witness(x402pay_chain, start)
    permit, signature = sign_permit(x402pay_chain, payer, upto.address, witness)
    call = upto.functions.settle(permit, amount, payer.address, tuple(witness.values()), signature)
    reverts_with(error, getattr(x402pay_chain, caller), web3, call)
    assert balances(x402pay_chain, x402pay_chain.payee.address) == [0]


def test_a_signature_for_another_spender_fails(
    x402pay_chain: Devnet, web3: Web3, payer: LocalAccount, exact: Any, upto: Any, start: int
) -> None:
    witness = upto_witness(x402pay_chain, start)
    permit, signature = sign_permit(x402pay_chain, payer, exact.address, witness)  # spender: the exact proxy
    call = upto.functions.settle(permit, AMOUNT, payer.address, tuple(witness.values()), signature)
    reverts_with("InvalidSigner()", x402pay_chain.facilitator, web3, call)


# -- EIP-2612 --------------------------------------------------------------------------------------------------


def sign_2612(devnet: Devnet, owner: LocalAccount, value: int, deadline: int) -> tuple[int, int, bytes, bytes, int]:
    """An EIP-2612 permit of TestUSDC for Permit2, as the EIP2612Permit tuple (value, deadline, r, s, v)."""
    usdc = devnet.contract("TestUSDC", devnet.usdc)
    message = {
        "owner": owner.address,
        "spender": devnet.permit2,
        "value": value,
        "nonce": usdc.functions.nonces(owner.address).call(),
        "deadline": deadline,
    }
    signed = owner.sign_typed_data(
        {"name": "USD Coin", "version": "2", "chainId": devnet.chain_id, "verifyingContract": devnet.usdc},
        {"Permit": [{"name": key, "type": "address" if key in ("owner", "spender") else "uint256"} for key in message]},
        message,
    )
    return value, deadline, signed.r.to_bytes(32, "big"), signed.s.to_bytes(32, "big"), signed.v


@pytest.fixture
def fresh_payer(x402pay_chain: Devnet, web3: Web3, payer: LocalAccount) -> LocalAccount:
    """A payer holding USDC whose Permit2 allowance was taken back."""
    usdc = x402pay_chain.contract("TestUSDC", x402pay_chain.usdc)
    send(web3, payer, usdc.functions.approve(x402pay_chain.permit2, 0))
    return payer


def test_exact_settle_with_permit_needs_no_prior_allowance(
    x402pay_chain: Devnet, web3: Web3, fresh_payer: LocalAccount, exact: Any, start: int
) -> None:
    payee = x402pay_chain.payee.address
    permit, signature = sign_permit(x402pay_chain, fresh_payer, exact.address, exact_witness(payee, start))
    plain = exact.functions.settle(permit, fresh_payer.address, (payee, start), signature)
    reverts_with("ERC20InsufficientAllowance(address,uint256,uint256)", x402pay_chain.facilitator, web3, plain)
    permit2612 = sign_2612(x402pay_chain, fresh_payer, AMOUNT, chain_now(web3) + 600)
    call = exact.functions.settleWithPermit(permit2612, permit, fresh_payer.address, (payee, start), signature)
    receipt = send(web3, x402pay_chain.facilitator, call)
    assert emitted(receipt, exact.address, "SettledWithPermit()")
    assert balances(x402pay_chain, payee) == [AMOUNT]
    usdc = x402pay_chain.contract("TestUSDC", x402pay_chain.usdc)
    assert usdc.functions.allowance(fresh_payer.address, x402pay_chain.permit2).call() == 0


def test_upto_settle_with_permit_charges_the_actual_amount(
    x402pay_chain: Devnet, web3: Web3, fresh_payer: LocalAccount, upto: Any, start: int
) -> None:
    witness = upto_witness(x402pay_chain, start)
    permit, signature = sign_permit(x402pay_chain, fresh_payer, upto.address, witness)
    permit2612 = sign_2612(x402pay_chain, fresh_payer, AMOUNT, chain_now(web3) + 600)
    call = upto.functions.settleWithPermit(
        permit2612, permit, AMOUNT // 2, fresh_payer.address, tuple(witness.values()), signature
    )
    send(web3, x402pay_chain.facilitator, call)
    assert balances(x402pay_chain, x402pay_chain.payee.address) == [AMOUNT // 2]


def test_settle_with_permit_refuses_a_2612_value_other_than_the_permitted_amount(
    x402pay_chain: Devnet, web3: Web3, fresh_payer: LocalAccount, exact: Any, start: int
) -> None:
    payee = x402pay_chain.payee.address
    permit, signature = sign_permit(x402pay_chain, fresh_payer, exact.address, exact_witness(payee, start))
    permit2612 = sign_2612(x402pay_chain, fresh_payer, AMOUNT + 1, chain_now(web3) + 600)
    call = exact.functions.settleWithPermit(permit2612, permit, fresh_payer.address, (payee, start), signature)
    reverts_with("Permit2612AmountMismatch()", x402pay_chain.facilitator, web3, call)


def test_a_failing_2612_permit_is_reported_and_an_existing_allowance_still_pays(
    x402pay_chain: Devnet, web3: Web3, payer: LocalAccount, exact: Any, start: int
) -> None:
    payee = x402pay_chain.payee.address
    permit, signature = sign_permit(x402pay_chain, payer, exact.address, exact_witness(payee, start))
    expired = sign_2612(x402pay_chain, payer, AMOUNT, chain_now(web3) - 1)
    call = exact.functions.settleWithPermit(expired, permit, payer.address, (payee, start), signature)
    receipt = send(web3, x402pay_chain.facilitator, call)
    failures = (
        "EIP2612PermitFailedWith" + kind for kind in ("Reason(address,address,string)", "Data(address,address,bytes)")
    )
    assert any(emitted(receipt, exact.address, failure) for failure in failures)
    assert balances(x402pay_chain, payee) == [AMOUNT]


# -- Permit2 without the proxies -------------------------------------------------------------------------------


def contract_wallet(devnet: Devnet, web3: Web3, funder: LocalAccount, address: str, answer: str) -> str:
    """A contract owner holding AMOUNT USDC, Permit2 approved, whose isValidSignature always returns `answer`."""
    usdc = devnet.contract("TestUSDC", devnet.usdc)
    wallet = Web3.to_checksum_address(address)
    web3.provider.make_request("anvil_impersonateAccount", [wallet])  # approve while it has no code yet
    web3.provider.make_request("anvil_setBalance", [wallet, hex(10**18)])
    approve = usdc.functions.approve(devnet.permit2, 2**256 - 1).transact({"from": wallet})
    assert web3.eth.wait_for_transaction_receipt(approve)["status"] == 1
    send(web3, funder, usdc.functions.transfer(wallet, AMOUNT))
    # PUSH4 answer, PUSH1 224, SHL, PUSH1 0, MSTORE, PUSH1 32, PUSH1 0, RETURN: returns bytes4(answer).
    web3.provider.make_request("anvil_setCode", [wallet, f"0x63{answer}60e01b60005260206000f3"])
    return wallet


def test_contract_owners_are_checked_with_eip1271(
    x402pay_chain: Devnet, web3: Web3, payer: LocalAccount, exact: Any, start: int
) -> None:
    accepting = contract_wallet(x402pay_chain, web3, payer, "0x" + "12" * 19 + "71", "1626ba7e")
    refusing = contract_wallet(x402pay_chain, web3, payer, "0x" + "12" * 19 + "72", "ffffffff")
    payee = x402pay_chain.payee.address
    permit = ((x402pay_chain.usdc, AMOUNT), secrets.randbits(256), chain_now(web3) + 600)
    signature = b"any bytes: the wallet decides"
    call = exact.functions.settle(permit, refusing, (payee, start), signature)
    reverts_with("InvalidContractSignature()", x402pay_chain.facilitator, web3, call)
    send(web3, x402pay_chain.facilitator, exact.functions.settle(permit, accepting, (payee, start), signature))
    assert balances(x402pay_chain, payee, accepting, refusing) == [AMOUNT, 0, AMOUNT]


def sign_batch(devnet: Devnet, payer: LocalAccount, amounts: list[int], witness: dict[str, Any] | None) -> Any:
    """Sign a PermitBatch(Witness)TransferFrom of USDC with the facilitator as spender."""
    primary = "PermitBatchWitnessTransferFrom" if witness else "PermitBatchTransferFrom"
    fields = [
        {"name": "permitted", "type": "TokenPermissions[]"},
        {"name": "spender", "type": "address"},
        {"name": "nonce", "type": "uint256"},
        {"name": "deadline", "type": "uint256"},
    ]
    types = {"EIP712Domain": PERMIT2_DOMAIN_TYPE, primary: fields, "TokenPermissions": TOKEN_PERMISSIONS}
    message: dict[str, Any] = {
        "permitted": [{"token": devnet.usdc, "amount": amount} for amount in amounts],
        "spender": devnet.facilitator.address,
        "nonce": secrets.randbits(256),
        "deadline": chain_now(devnet.web3()) + 600,
    }
    if witness:
        fields.append({"name": "witness", "type": "Witness"})
        types["Witness"] = EXACT_WITNESS
        message["witness"] = witness
    full = {"types": types, "primaryType": primary, "domain": permit2_domain(devnet), "message": message}
    permit = ([(devnet.usdc, amount) for amount in amounts], message["nonce"], message["deadline"])
    return permit, payer.sign_typed_data(full_message=full).signature


@pytest.mark.parametrize("with_witness", [False, True])
def test_permit2_batch_transfers_by_a_direct_spender(
    x402pay_chain: Devnet, web3: Web3, payer: LocalAccount, start: int, with_witness: bool
) -> None:
    payee = x402pay_chain.payee.address
    witness = exact_witness(payee, start) if with_witness else None
    permit, signature = sign_batch(x402pay_chain, payer, [AMOUNT, 5], witness)
    functions = x402pay_chain.contract("Permit2", x402pay_chain.permit2).functions
    witness_hash = Web3.keccak(
        bytes.fromhex(EXACT_WITNESS_TYPEHASH[2:]) + bytes(12) + bytes.fromhex(payee[2:]) + start.to_bytes(32, "big")
    )

    def transfer_call(details: list[tuple[str, int]]) -> Any:
        if witness:
            return functions.permitWitnessTransferFrom(
                permit, details, payer.address, witness_hash, EXACT_WITNESS_TYPE_STRING, signature
            )
        return functions.permitTransferFrom(permit, details, payer.address, signature)

    reverts_with("LengthMismatch()", x402pay_chain.facilitator, web3, transfer_call([(payee, AMOUNT)]))
    call = transfer_call([(payee, AMOUNT), (payee, 0)])  # a zero request skips a permitted entry
    receipt = send(web3, x402pay_chain.facilitator, call)
    assert balances(x402pay_chain, payee) == [AMOUNT]
    transfer = Web3.keccak(text="Transfer(address,address,uint256)")
    usdc_logs = [log for log in receipt["logs"] if log["address"] == x402pay_chain.usdc]
    assert [log["topics"][0] for log in usdc_logs] == [transfer]  # the zero request moved nothing
    reverts_with("InvalidNonce()", x402pay_chain.facilitator, web3, call)


def test_permit2_single_transfer_without_witness_checks_the_requested_amount(
    x402pay_chain: Devnet, web3: Web3, payer: LocalAccount
) -> None:
    facilitator, payee = x402pay_chain.facilitator, x402pay_chain.payee.address
    message = {
        "permitted": {"token": x402pay_chain.usdc, "amount": AMOUNT},
        "spender": facilitator.address,
        "nonce": secrets.randbits(256),
        "deadline": chain_now(web3) + 600,
    }
    types = {
        "EIP712Domain": PERMIT2_DOMAIN_TYPE,
        "PermitTransferFrom": [
            {"name": "permitted", "type": "TokenPermissions"},
            {"name": "spender", "type": "address"},
            {"name": "nonce", "type": "uint256"},
            {"name": "deadline", "type": "uint256"},
        ],
        "TokenPermissions": TOKEN_PERMISSIONS,
    }
    full = {"types": types, "primaryType": "PermitTransferFrom", "domain": permit2_domain(x402pay_chain)}
    signature = Account.sign_typed_data(payer.key, full_message={**full, "message": message}).signature
    permit = ((x402pay_chain.usdc, AMOUNT), message["nonce"], message["deadline"])
    functions = x402pay_chain.contract("Permit2", x402pay_chain.permit2).functions
    too_much = functions.permitTransferFrom(permit, (payee, AMOUNT + 1), payer.address, signature)
    argument = reverts_with("InvalidAmount(uint256)", facilitator, web3, too_much)
    assert int.from_bytes(argument, "big") == AMOUNT
    send(web3, facilitator, functions.permitTransferFrom(permit, (payee, AMOUNT - 1), payer.address, signature))
    assert balances(x402pay_chain, payee) == [AMOUNT - 1]
