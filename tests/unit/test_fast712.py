"""fast712 against eth-account: same digest, same signature bytes, the right signer; anything else falls back.

Property tests draw random keys and messages of every shape x402 signs (built by `x402pay._schemes.eip712`, with
addresses in every accepted spelling and nonces as bytes or hex). Throughput is measured in bench/, not here.
"""

from __future__ import annotations

import copy
import pickle
from typing import Any

import pytest
from coincurve import PrivateKey
from eth_account import Account
from eth_account.messages import SignableMessage, encode_typed_data
from eth_account.signers.base import BaseAccount
from eth_account.signers.local import LocalAccount
from eth_keys import keys
from eth_utils.address import to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st

from x402pay._schemes import eip712, fast712
from x402pay._wallet import Wallet
from x402pay.errors import SigningError

SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
KEY = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
ACCOUNT: LocalAccount = Account.from_key(KEY)
USDC = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
PAY_TO = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
TRANSFER_WITH_AUTHORIZATION = (
    "TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,"
    "bytes32 nonce)"
)
PERMIT_WITNESS = (
    "PermitWitnessTransferFrom(TokenPermissions permitted,address spender,uint256 nonce,uint256 deadline,"
    "Witness witness)TokenPermissions(address token,uint256 amount)"
)

private_keys = st.integers(min_value=1, max_value=SECP256K1_ORDER - 1).map(lambda k: k.to_bytes(32, "big"))
uint256 = st.one_of(st.integers(0, 2**64), st.integers(0, 2**256 - 1))
raw_addresses = st.binary(min_size=20, max_size=20)
spellings = st.sampled_from(["checksum", "lower", "upper"])
nonces = st.binary(min_size=32, max_size=32)


@st.composite
def addresses(draw: st.DrawFn) -> str:
    """A random address, EIP-55 checksummed, all lower case or all upper case (all three encode alike)."""
    checksummed = to_checksum_address(draw(raw_addresses))
    spelling = draw(spellings)
    if spelling == "lower":
        return checksummed.lower()
    return "0x" + checksummed[2:].upper() if spelling == "upper" else checksummed


@st.composite
def bytes32(draw: st.DrawFn) -> bytes | str:
    """A 32-byte nonce as bytes, or as 0x hex in either case."""
    value = draw(nonces)
    form = draw(st.sampled_from(["bytes", "hex", "HEX"]))
    if form == "bytes":
        return value
    return "0x" + (value.hex() if form == "hex" else value.hex().upper())


def token_domain() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"token_name": st.text(), "token_version": st.text(), "chain_id": uint256, "token": addresses()}
    )


@st.composite
def transfer_with_authorization(draw: st.DrawFn) -> dict[str, Any]:
    authorization = {
        "from": draw(addresses()),
        "to": draw(addresses()),
        "value": draw(uint256),
        "validAfter": draw(uint256),
        "validBefore": draw(uint256),
        "nonce": draw(bytes32()),
    }
    return eip712.transfer_with_authorization(**draw(token_domain()), authorization=authorization)


@st.composite
def permit_witness(draw: st.DrawFn, upto: bool) -> dict[str, Any]:
    witness: dict[str, Any] = {"to": draw(addresses()), "validAfter": draw(uint256)}
    if upto:
        witness = {"to": witness["to"], "facilitator": draw(addresses()), "validAfter": witness["validAfter"]}
    return eip712.permit_witness_transfer_from(
        chain_id=draw(uint256),
        token=draw(addresses()),
        amount=draw(uint256),
        spender=draw(addresses()),
        nonce=draw(uint256),
        deadline=draw(uint256),
        witness=witness,
        witness_fields=eip712.UPTO_WITNESS_FIELDS if upto else eip712.EXACT_WITNESS_FIELDS,
        permit2=draw(addresses()),
    )


@st.composite
def eip2612_permit(draw: st.DrawFn) -> dict[str, Any]:
    fields = {"owner": addresses(), "spender": addresses(), "value": uint256, "nonce": uint256, "deadline": uint256}
    return eip712.eip2612_permit(**draw(token_domain()), **{name: draw(value) for name, value in fields.items()})


SHAPES = {
    "TransferWithAuthorization": transfer_with_authorization(),
    "PermitWitnessTransferFrom exact": permit_witness(upto=False),
    "PermitWitnessTransferFrom upto": permit_witness(upto=True),
    "Permit": eip2612_permit(),
}


def recover(typed_data: dict[str, Any], signature: bytes) -> str:
    return Account.recover_message(encode_typed_data(full_message=typed_data), signature=signature)


# -- the verifier's path: the same digests without building the typed data ------------------------------------


@settings(deadline=None, max_examples=100, database=None)
@given(typed_data=transfer_with_authorization())
def test_a_transfer_digest_from_its_values_is_the_typed_datas(typed_data: dict[str, Any]) -> None:
    domain = typed_data["domain"]
    digest = fast712.transfer_with_authorization_digest(
        token_name=domain["name"],
        token_version=domain["version"],
        chain_id=domain["chainId"],
        token=domain["verifyingContract"],
        authorization=typed_data["message"],
    )
    assert digest == fast712.typed_data_digest(typed_data)


@pytest.mark.parametrize("upto", [False, True], ids=["exact witness", "upto witness"])
@settings(deadline=None, max_examples=100, database=None)
@given(data=st.data())
def test_a_permit_witness_digest_from_its_values_is_the_typed_datas(upto: bool, data: Any) -> None:
    typed_data = data.draw(permit_witness(upto=upto))
    domain = typed_data["domain"]
    digest = fast712.permit_witness_digest(
        chain_id=domain["chainId"], message=typed_data["message"], upto=upto, permit2=domain["verifyingContract"]
    )
    assert digest == fast712.typed_data_digest(typed_data)


@pytest.mark.parametrize(
    "change",
    [{"chain_id": True}, {"chain_id": 2**256}, {"permit2": "0xnot-an-address"}, {"message": {"spender": 1}}],
    ids=["bool chain id", "chain id out of range", "bad verifying contract", "bad message"],
)
def test_a_permit_witness_digest_of_values_fast712_does_not_vouch_for_is_none(change: dict[str, Any]) -> None:
    typed_data = valid_permit2()
    arguments: dict[str, Any] = {
        "chain_id": typed_data["domain"]["chainId"],
        "message": typed_data["message"],
        "upto": False,
        "permit2": typed_data["domain"]["verifyingContract"],
    }
    assert fast712.permit_witness_digest(**arguments) == fast712.typed_data_digest(typed_data)
    assert fast712.permit_witness_digest(**(arguments | change)) is None


# -- the property: byte-identical to eth-account, for every shape -----------------------------------------------


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@settings(deadline=None, max_examples=150, database=None)
@given(data=st.data(), key=private_keys)
def test_digest_and_signature_are_eth_accounts(shape: st.SearchStrategy[dict[str, Any]], data: Any, key: bytes) -> None:
    typed_data = data.draw(shape)
    account: LocalAccount = Account.from_key(key)
    expected = account.sign_typed_data(full_message=typed_data)
    digest = fast712.typed_data_digest(typed_data)
    assert digest == expected.message_hash
    assert fast712.sign_digest(PrivateKey(key), digest) == expected.signature
    assert fast712.recover_signer(digest, expected.signature) == account.address.lower()
    signature = Wallet(account).sign_typed_data(typed_data)
    assert signature == expected.signature
    assert recover(typed_data, signature) == account.address


@pytest.mark.parametrize(
    "mangle",
    [
        lambda signature: signature[:64] + bytes((signature[64] - 27,)),  # v as 0 / 1: eth-account decides
        lambda signature: signature[:64],
        lambda signature: signature + b"\x00",
        lambda signature: bytes(64) + signature[64:],  # r = s = 0: no key made it
    ],
    ids=["v-0-or-1", "short", "long", "zero-r-s"],
)
def test_recover_signer_answers_none_for_other_forms(mangle: Any) -> None:
    signed = ACCOUNT.sign_typed_data(full_message=valid_transfer())
    assert fast712.recover_signer(signed.message_hash, mangle(signed.signature)) is None


# -- anything else falls back to eth-account --------------------------------------------------------------------


def valid_transfer() -> dict[str, Any]:
    authorization = {
        "from": ACCOUNT.address,
        "to": PAY_TO,
        "value": 10_000,
        "validAfter": 1_740_672_089,
        "validBefore": 1_740_672_154,
        "nonce": "0x" + "ab" * 32,
    }
    return eip712.transfer_with_authorization(
        token_name="USD Coin", token_version="2", chain_id=8453, token=USDC, authorization=authorization
    )


def valid_permit2() -> dict[str, Any]:
    return eip712.permit_witness_transfer_from(
        chain_id=8453,
        token=USDC,
        amount=10_000,
        spender=PAY_TO,
        nonce=7,
        deadline=1_740_672_154,
        witness={"to": PAY_TO, "validAfter": 1_740_672_089},
        witness_fields=eip712.EXACT_WITNESS_FIELDS,
    )


def changed(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `base` with the item at the dotted `path` set to `value` (or deleted, for `...`)."""
    typed_data = copy.deepcopy(base)
    *parents, last = path.split(".")
    target = typed_data
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    if value is ...:
        del target[last]
    else:
        target[last] = value
    return typed_data


BAD_CHECKSUM = PAY_TO[:-1] + "c"
# Shapes or values fast712 does not vouch for, but eth-account signs: the wallet must still give eth-account's bytes.
SIGNED_BY_ETH_ACCOUNT = {
    "decimal string amount": changed(valid_transfer(), "message.value", "10000"),
    "hex string amount": changed(valid_transfer(), "message.value", "0x2710"),
    "address without 0x": changed(valid_transfer(), "message.to", PAY_TO[2:]),
    "chainId as a string": changed(valid_transfer(), "domain.chainId", "8453"),
    "nonce as bytearray": changed(valid_transfer(), "message.nonce", bytearray(32)),
    "nonce of 31 bytes": changed(valid_transfer(), "message.nonce", bytes(31)),
    "no primaryType": changed(valid_transfer(), "primaryType", ...),
    "fields reordered": changed(
        valid_transfer(),
        "types.TransferWithAuthorization",
        list(reversed(valid_transfer()["types"]["TransferWithAuthorization"])),
    ),
    "another witness": changed(valid_permit2(), "types.Witness", [{"name": "to", "type": "address"}]),
    "no permitted struct": changed(valid_permit2(), "message.permitted", None),
    "domain with a salt": changed(
        changed(valid_transfer(), "domain.salt", b"\x01" * 32),
        "types.EIP712Domain",
        [*valid_transfer()["types"]["EIP712Domain"], {"name": "salt", "type": "bytes32"}],
    ),
    "another struct": {
        "types": {
            "EIP712Domain": [{"name": "name", "type": "string"}, {"name": "chainId", "type": "uint256"}],
            "Mail": [{"name": "to", "type": "address"}, {"name": "amount", "type": "uint256"}],
        },
        "primaryType": "Mail",
        "domain": {"name": "x402pay test", "chainId": 31337},
        "message": {"to": PAY_TO, "amount": 10_000},
    },
}
# What eth-account refuses (fast712 must not sign it either): the wallet reports eth-account's verdict.
REFUSED_BY_ETH_ACCOUNT = {
    "uint256 overflow": changed(valid_transfer(), "message.value", 2**256),
    "negative amount": changed(valid_transfer(), "message.validAfter", -1),
    "missing field": changed(valid_transfer(), "message.nonce", ...),
    "bad address": changed(valid_permit2(), "message.witness.to", "0x12"),
    "domain keys do not match the types": changed(valid_transfer(), "domain.version", ...),
    "no domain": changed(valid_transfer(), "domain", ...),
    "no message": changed(valid_permit2(), "message", ...),
}
NOT_RECOGNISED = {
    **SIGNED_BY_ETH_ACCOUNT,
    **REFUSED_BY_ETH_ACCOUNT,
    "bool amount": changed(valid_transfer(), "message.value", True),
    "mixed case with a broken checksum": changed(valid_transfer(), "message.to", BAD_CHECKSUM),
    "version None": changed(valid_transfer(), "domain.version", None),
    "name with a lone surrogate": changed(valid_transfer(), "domain.name", "USD \ud800"),
    "message not a dict": changed(valid_transfer(), "message", [1, 2]),
    "primaryType not a string": changed(valid_transfer(), "primaryType", ["TransferWithAuthorization"]),
    "not a dict at all": [valid_transfer()],
}


def valid_permit() -> dict[str, Any]:
    return eip712.eip2612_permit(
        token_name="USD Coin",
        token_version="2",
        chain_id=8453,
        token=USDC,
        owner=ACCOUNT.address,
        spender=PAY_TO,
        value=1,
        nonce=0,
        deadline=1_740_672_154,
    )


@pytest.mark.parametrize(
    ("typed_data", "expected"),
    [
        (valid_transfer(), TRANSFER_WITH_AUTHORIZATION),
        (valid_permit2(), PERMIT_WITNESS + "Witness(address to,uint256 validAfter)"),
        (
            changed(valid_permit2(), "types.Witness", eip712.UPTO_WITNESS_FIELDS),
            PERMIT_WITNESS + "Witness(address to,address facilitator,uint256 validAfter)",
        ),
        (valid_permit(), "Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)"),
    ],
    ids=["TransferWithAuthorization", "exact witness", "upto witness", "Permit"],
)
def test_type_strings_are_the_standards(typed_data: dict[str, Any], expected: str) -> None:
    assert fast712.encode_type(typed_data["primaryType"], typed_data["types"]) == expected


def test_our_builders_outputs_are_recognised() -> None:
    assert fast712.typed_data_digest(valid_transfer()) is not None
    assert fast712.typed_data_digest(valid_permit2()) is not None


@pytest.mark.parametrize("typed_data", NOT_RECOGNISED.values(), ids=NOT_RECOGNISED.keys())
def test_what_fast712_does_not_vouch_for_gives_none(typed_data: Any) -> None:
    assert fast712.typed_data_digest(typed_data) is None


@pytest.mark.parametrize("typed_data", SIGNED_BY_ETH_ACCOUNT.values(), ids=SIGNED_BY_ETH_ACCOUNT.keys())
def test_the_wallet_falls_back_to_eth_account(typed_data: dict[str, Any]) -> None:
    assert Wallet(ACCOUNT).sign_typed_data(typed_data) == ACCOUNT.sign_typed_data(full_message=typed_data).signature


@pytest.mark.parametrize("typed_data", REFUSED_BY_ETH_ACCOUNT.values(), ids=REFUSED_BY_ETH_ACCOUNT.keys())
def test_what_eth_account_refuses_stays_a_signing_error(typed_data: dict[str, Any]) -> None:
    with pytest.raises(SigningError, match="malformed EIP-712 typed data"):
        Wallet(ACCOUNT).sign_typed_data(typed_data)


def test_a_domain_separator_is_computed_once_per_domain() -> None:
    fast712.typed_data_digest(valid_transfer())
    before = fast712._domain_separator.cache_info()
    fast712.typed_data_digest(valid_transfer())
    after = fast712._domain_separator.cache_info()
    assert (after.hits, after.misses) == (before.hits + 1, before.misses)


# -- the wallet takes the fast path only over a plain LocalAccount ---------------------------------------------


class LocalSubclass(LocalAccount):
    """A LocalAccount subclass may sign its own way (here: as usual, but counted): the wallet must ask it."""

    calls = 0

    def sign_message(self, signable_message: SignableMessage) -> Any:
        LocalSubclass.calls += 1
        return super().sign_message(signable_message)


class DelegatingSigner(BaseAccount):
    """Any other BaseAccount (a remote signer, say): here one that signs through a LocalAccount it holds."""

    @property
    def address(self) -> Any:
        return ACCOUNT.address

    def sign_message(self, signable_message: SignableMessage) -> Any:
        return ACCOUNT.sign_message(signable_message)

    def unsafe_sign_hash(self, message_hash: Any) -> Any:
        raise NotImplementedError

    def sign_transaction(self, transaction_dict: Any, blobs: Any = None) -> Any:
        raise NotImplementedError


@pytest.fixture
def fast_calls(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The digests the wallet signs through fast712 during the test."""
    calls: list[bytes] = []
    original = fast712.sign_digest

    def spy(key: PrivateKey, digest: bytes) -> bytes:
        calls.append(digest)
        return original(key, digest)

    monkeypatch.setattr(fast712, "sign_digest", spy)
    return calls


def test_a_local_account_wallet_signs_through_fast712(fast_calls: list[bytes]) -> None:
    wallet = Wallet.from_key(KEY)
    signature = wallet.sign_typed_data(valid_transfer())
    assert fast_calls == [ACCOUNT.sign_typed_data(full_message=valid_transfer()).message_hash]
    assert signature == ACCOUNT.sign_typed_data(full_message=valid_transfer()).signature


@pytest.mark.parametrize(
    "signer", [DelegatingSigner(), LocalSubclass(keys.PrivateKey(ACCOUNT.key), Account())], ids=type
)
def test_other_signers_sign_through_eth_account(fast_calls: list[bytes], signer: BaseAccount) -> None:
    calls_before = LocalSubclass.calls
    signature = Wallet(signer).sign_typed_data(valid_permit2())
    assert signature == ACCOUNT.sign_typed_data(full_message=valid_permit2()).signature
    assert fast_calls == []
    assert LocalSubclass.calls == calls_before + isinstance(signer, LocalSubclass)


def test_a_failure_on_the_fast_path_reports_its_type_only(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(key: PrivateKey, digest: bytes) -> bytes:
        raise RuntimeError(f"cannot sign with {KEY}")

    monkeypatch.setattr(fast712, "sign_digest", failing)
    wallet = Wallet.from_key(KEY)
    with pytest.raises(SigningError, match=r"^the signer of 0x\w+ failed \(RuntimeError\)$") as caught:
        wallet.sign_typed_data(valid_transfer())
    assert caught.value.__context__ is None
    assert caught.value.__cause__ is None


def test_the_fast_key_stays_private() -> None:
    wallet = Wallet.from_key(KEY)
    wallet.sign_typed_data(valid_transfer())
    assert KEY[2:] not in repr(wallet).lower()
    assert not any(isinstance(getattr(wallet, name), PrivateKey) for name in dir(wallet) if not name.startswith("_"))
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(wallet)
