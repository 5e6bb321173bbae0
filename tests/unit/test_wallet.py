"""Wallet: construction from a signer, a key, a keystore and the environment; signing; no key in any text."""

from __future__ import annotations

import copy
import json
import pickle
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import SignableMessage, encode_typed_data
from eth_account.signers.base import BaseAccount
from eth_account.signers.local import LocalAccount
from hypothesis import given, settings
from hypothesis import strategies as st

import x402pay
from x402pay._schemes.eip712 import transfer_with_authorization
from x402pay._wallet import Wallet
from x402pay.errors import SigningError, WalletError

PACKAGE_DIR = str(Path(x402pay.__file__).parent)

KEY = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
KEY_HEX = KEY[2:]
ACCOUNT: LocalAccount = Account.from_key(KEY)
PASSWORD = "correct horse battery staple"
TYPED_DATA: dict[str, Any] = {
    "types": {
        "EIP712Domain": [{"name": "name", "type": "string"}, {"name": "chainId", "type": "uint256"}],
        "Mail": [{"name": "to", "type": "address"}, {"name": "amount", "type": "uint256"}],
    },
    "primaryType": "Mail",
    "domain": {"name": "x402pay test", "chainId": 31337},
    "message": {"to": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C", "amount": 10_000},
}


def fast_keystore() -> dict[str, Any]:
    """A keystore of KEY that opens in microseconds (2 pbkdf2 rounds): for tests only."""
    return Account.encrypt(KEY, PASSWORD, kdf="pbkdf2", iterations=2)


def write_keystore(tmp_path: Path, keystore: Any) -> Path:
    path = tmp_path / "keystore.json"
    path.write_text(json.dumps(keystore))
    return path


def texts_of(error: BaseException) -> str:
    """What a report of `error` could show: messages, chained errors, and the locals of x402pay's frames.

    The test's own frame (which holds the secret it passed in) is the caller's business, not the library's.
    """
    parts = []
    seen: BaseException | None = error
    while seen is not None:
        parts.append(repr(seen))
        parts.extend(traceback.format_exception(seen))
        tb = seen.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_filename.startswith(PACKAGE_DIR):
                parts.extend(repr(value) for value in tb.tb_frame.f_locals.values())
            tb = tb.tb_next
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


def assert_no_secret(error: BaseException, *secrets: str) -> None:
    text = texts_of(error).lower()
    for secret in (KEY_HEX, *secrets):
        assert secret.lower() not in text


def recover(typed_data: dict[str, Any], signature: bytes) -> str:
    return Account.recover_message(encode_typed_data(full_message=typed_data), signature=signature)


class FailingSigner(BaseAccount):
    """A signer whose failure message quotes its key, as a careless remote signer might."""

    @property
    def address(self) -> Any:
        return ACCOUNT.address

    def sign_message(self, signable_message: SignableMessage) -> Any:
        raise RuntimeError(f"cannot sign with {KEY_HEX}")

    def unsafe_sign_hash(self, message_hash: Any) -> Any:
        raise NotImplementedError

    def sign_transaction(self, transaction_dict: Any, blobs: Any = None) -> Any:
        raise NotImplementedError


class DelegatingSigner(FailingSigner):
    """Any BaseAccount will do: this one signs through a LocalAccount it holds."""

    def sign_message(self, signable_message: SignableMessage) -> Any:
        return ACCOUNT.sign_message(signable_message)


class ShortSigner(FailingSigner):
    """A signer that returns a 64-byte (EIP-2098 compact) signature, which x402 payloads do not carry."""

    def sign_message(self, signable_message: SignableMessage) -> Any:
        signed = ACCOUNT.sign_message(signable_message)
        return signed._replace(signature=signed.signature[:64])


# -- construction --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [KEY, KEY_HEX, KEY.upper().replace("0X", "0x"), f"  {KEY}\n", bytes.fromhex(KEY_HEX)])
def test_from_key_accepts_hex_with_or_without_0x_and_raw_bytes(key: str | bytes) -> None:
    assert Wallet.from_key(key).address == ACCOUNT.address


def test_wrapping_any_eth_account_signer() -> None:
    assert Wallet(ACCOUNT).address == ACCOUNT.address
    assert Wallet(DelegatingSigner()).address == ACCOUNT.address


def test_wrapping_something_that_is_not_a_signer_is_refused() -> None:
    with pytest.raises(WalletError, match=r"\(BaseAccount\), got str"):
        Wallet(KEY)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "key",
    [
        "0x12",
        KEY + "00",
        "zz" * 32,
        "00" * 32,  # zero is not a valid secp256k1 key
        "ff" * 32,  # nor is anything at or above the curve order
        bytes.fromhex(KEY_HEX)[:31],
        "",
    ],
)
def test_a_malformed_key_is_refused_without_echoing_it(key: str | bytes) -> None:
    with pytest.raises(WalletError, match="not a valid secp256k1 private key") as caught:
        Wallet.from_key(key)
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None
    secret = key.hex() if isinstance(key, bytes) else key.strip().removeprefix("0x")
    if len(secret) > 8:
        assert_no_secret(caught.value, secret)


def test_a_key_of_the_wrong_type_is_refused() -> None:
    with pytest.raises(WalletError, match="str or bytes, got int"):
        Wallet.from_key(int(KEY_HEX, 16))  # type: ignore[arg-type]


def test_a_near_miss_key_leaves_no_trace_in_the_traceback() -> None:
    near_miss = KEY_HEX[:-1] + "g"  # one bad digit: the rest is a real key
    with pytest.raises(WalletError) as caught:
        Wallet.from_key(near_miss)
    assert_no_secret(caught.value, KEY_HEX[:-1])


# -- repr and str ---------------------------------------------------------------------------------------------


def test_repr_and_str_show_the_address_only() -> None:
    wallet = Wallet.from_key(KEY)
    assert repr(wallet) == f"Wallet(address={ACCOUNT.address!r})"
    assert str(wallet) == ACCOUNT.address
    for text in (repr(wallet), str(wallet), f"{wallet}", repr([wallet]), repr({"w": wallet})):
        assert KEY_HEX not in text.lower()


def test_a_wallet_has_no_instance_dict_to_dump() -> None:
    wallet = Wallet.from_key(KEY)
    assert not hasattr(wallet, "__dict__")
    with pytest.raises(AttributeError):
        wallet.key = "x"  # type: ignore[attr-defined]


# -- signing --------------------------------------------------------------------------------------------------


def test_sign_typed_data_returns_a_65_byte_signature_of_the_wallet() -> None:
    signature = Wallet.from_key(KEY).sign_typed_data(TYPED_DATA)
    assert isinstance(signature, bytes)
    assert len(signature) == 65
    assert signature[64] in (27, 28)
    assert recover(TYPED_DATA, signature) == ACCOUNT.address
    # RFC 6979 signatures are deterministic: eth-account's own typed-data signing gives the same bytes.
    assert signature == ACCOUNT.sign_typed_data(full_message=TYPED_DATA).signature


def test_sign_typed_data_through_a_delegating_signer() -> None:
    signature = Wallet(DelegatingSigner()).sign_typed_data(TYPED_DATA)
    assert recover(TYPED_DATA, signature) == ACCOUNT.address


@pytest.mark.parametrize(
    "typed_data",
    [
        {**TYPED_DATA, "primaryType": "Missing"},
        {**TYPED_DATA, "message": {"to": "0x12", "amount": 1}},
        {**TYPED_DATA, "message": {"to": TYPED_DATA["message"]["to"]}},
        {**TYPED_DATA, "message": {"to": TYPED_DATA["message"]["to"], "amount": 2**256}},
    ],
    ids=["unknown primary type", "bad address", "missing field", "uint256 overflow"],
)
def test_malformed_typed_data_is_a_signing_error(typed_data: dict[str, Any]) -> None:
    with pytest.raises(SigningError, match="malformed EIP-712 typed data"):
        Wallet.from_key(KEY).sign_typed_data(typed_data)


def test_a_failing_signer_is_a_signing_error_that_does_not_repeat_its_message() -> None:
    with pytest.raises(SigningError, match=r"the signer of 0x\w+ failed \(RuntimeError\)") as caught:
        Wallet(FailingSigner()).sign_typed_data(TYPED_DATA)
    assert caught.value.__context__ is None
    assert_no_secret(caught.value)


def test_a_signature_that_is_not_65_bytes_is_refused() -> None:
    with pytest.raises(SigningError, match="returned 64 bytes"):
        Wallet(ShortSigner()).sign_typed_data(TYPED_DATA)


# -- keystores ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("as_str", [True, False])
def test_keystore_round_trip(tmp_path: Path, as_str: bool) -> None:
    path = write_keystore(tmp_path, fast_keystore())
    wallet = Wallet.from_keystore(str(path) if as_str else path, PASSWORD)
    assert wallet.address == ACCOUNT.address


def test_a_scrypt_keystore_opens(tmp_path: Path) -> None:
    keystore = Account.encrypt(KEY, PASSWORD, kdf="scrypt", iterations=2**4)
    assert Wallet.from_keystore(write_keystore(tmp_path, keystore), PASSWORD).address == ACCOUNT.address


def test_a_wrong_password_is_refused_without_echoing_it(tmp_path: Path) -> None:
    path = write_keystore(tmp_path, fast_keystore())
    wrong = "correct horse battery stapler"
    with pytest.raises(WalletError, match="wrong password or damaged file") as caught:
        Wallet.from_keystore(path, wrong)
    assert str(path) in str(caught.value)
    assert_no_secret(caught.value, wrong, PASSWORD)


def test_a_missing_keystore_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(WalletError, match=r"cannot read keystore .*nope\.json.*No such file"):
        Wallet.from_keystore(missing, PASSWORD)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "is not JSON"),
        ("[1, 2]", "not a v3 JSON keystore"),
        ('{"version": 3}', "not a v3 JSON keystore"),
        ('{"version": 3, "crypto": {"kdf": "argon2"}}', "not a v3 JSON keystore eth-account can open"),
    ],
)
def test_a_file_that_is_not_a_keystore_is_refused(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "keystore.json"
    path.write_text(content)
    with pytest.raises(WalletError, match=message):
        Wallet.from_keystore(path, PASSWORD)


def test_a_keystore_that_states_another_address_is_refused(tmp_path: Path) -> None:
    keystore = {**fast_keystore(), "address": "00" * 20}
    with pytest.raises(WalletError, match=f"holds the key of {ACCOUNT.address}"):
        Wallet.from_keystore(write_keystore(tmp_path, keystore), PASSWORD)


def test_new_keystore_round_trip(tmp_path: Path) -> None:
    wallet, keystore = Wallet.new_keystore(PASSWORD, kdf="pbkdf2", iterations=2)
    assert keystore["version"] == 3
    assert keystore["address"].lower() == wallet.address[2:].lower()
    assert Wallet.from_keystore(write_keystore(tmp_path, keystore), PASSWORD).address == wallet.address
    other, _ = Wallet.new_keystore(PASSWORD, kdf="pbkdf2", iterations=2)
    assert other.address != wallet.address


def test_new_keystore_refuses_an_empty_password() -> None:
    with pytest.raises(WalletError, match="empty password"):
        Wallet.new_keystore("")


# -- environment ----------------------------------------------------------------------------------------------


def test_from_env_with_a_private_key() -> None:
    assert Wallet.from_env({"X402PAY_PRIVATE_KEY": KEY + "\n"}).address == ACCOUNT.address


def test_from_env_with_a_keystore(tmp_path: Path) -> None:
    path = write_keystore(tmp_path, fast_keystore())
    environ = {"X402PAY_KEYSTORE": str(path), "X402PAY_KEYSTORE_PASSWORD": PASSWORD}
    assert Wallet.from_env(environ).address == ACCOUNT.address


def test_from_env_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("X402PAY_KEYSTORE", raising=False)
    monkeypatch.setenv("X402PAY_PRIVATE_KEY", KEY)
    assert Wallet.from_env().address == ACCOUNT.address


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, "set X402PAY_PRIVATE_KEY, or X402PAY_KEYSTORE and X402PAY_KEYSTORE_PASSWORD"),
        ({"X402PAY_PRIVATE_KEY": "  "}, "set X402PAY_PRIVATE_KEY, or X402PAY_KEYSTORE"),
        ({"X402PAY_KEYSTORE": "/k.json"}, "X402PAY_KEYSTORE is set but X402PAY_KEYSTORE_PASSWORD is missing"),
        ({"X402PAY_KEYSTORE_PASSWORD": PASSWORD}, "set X402PAY_PRIVATE_KEY, or X402PAY_KEYSTORE"),
        ({"X402PAY_PRIVATE_KEY": KEY, "X402PAY_KEYSTORE": "/k.json"}, "set only one"),
    ],
)
def test_from_env_names_what_is_missing(environ: dict[str, str], message: str) -> None:
    with pytest.raises(WalletError, match=message) as caught:
        Wallet.from_env(environ)
    assert_no_secret(caught.value, PASSWORD)


def test_from_env_names_the_variable_of_a_bad_key_but_not_its_value() -> None:
    bad = KEY_HEX[:-2]
    with pytest.raises(WalletError, match=r"^X402PAY_PRIVATE_KEY: not a valid secp256k1 private key") as caught:
        Wallet.from_env({"X402PAY_PRIVATE_KEY": bad})
    assert caught.value.__context__ is None
    assert_no_secret(caught.value, bad)


def test_from_env_with_a_wrong_keystore_password_leaves_no_password_in_the_traceback(tmp_path: Path) -> None:
    path = write_keystore(tmp_path, fast_keystore())
    environ = {"X402PAY_KEYSTORE": str(path), "X402PAY_KEYSTORE_PASSWORD": "hunter2-but-longer"}
    with pytest.raises(WalletError, match="wrong password") as caught:
        Wallet.from_env(environ)
    assert_no_secret(caught.value, "hunter2-but-longer")


def test_a_wallet_cannot_be_pickled_or_copied_into_bytes() -> None:
    wallet = Wallet.from_key("0x" + "11" * 32)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(wallet)
    with pytest.raises(TypeError, match="cannot be pickled"):
        copy.deepcopy(wallet)


# -- a wallet made from a key needs no eth-account until something asks for it -------------------------------

SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=1, max_value=SECP256K1_ORDER - 1))
def test_a_key_wallet_has_eth_accounts_address_and_signatures(secret: int) -> None:
    key = secret.to_bytes(32, "big")
    account = Account.from_key(key)
    wallet = Wallet.from_key(key)
    assert wallet.address == account.address
    transfer = transfer_with_authorization(  # a shape fast712 signs
        token_name="USD Coin", token_version="2", chain_id=8453, token=ACCOUNT.address,
        authorization={"from": account.address, "to": ACCOUNT.address, "value": secret % 10**12, "validAfter": 0,
                       "validBefore": 2**40, "nonce": "0x" + key.hex()},
    )  # fmt: skip
    for typed_data in (transfer, TYPED_DATA):  # fast712, then eth-account's own path
        assert wallet.sign_typed_data(typed_data) == account.sign_typed_data(full_message=typed_data).signature


def test_a_key_wallet_signs_transactions_like_eth_account() -> None:
    transaction = {"to": ACCOUNT.address, "value": 1, "gas": 21_000, "gasPrice": 10**9, "nonce": 0, "chainId": 31337}
    raw = Wallet.from_key(KEY).sign_transaction(transaction)
    assert raw == bytes(ACCOUNT.sign_transaction(transaction).raw_transaction)


def test_importing_x402pay_loads_neither_web3_nor_eth_account() -> None:
    probe = (
        "import sys, x402pay\n"
        "wallet = x402pay.Wallet.from_key('0x' + '11' * 32)\n"
        "print(sorted(name for name in ('web3', 'eth_account') if name in sys.modules))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
