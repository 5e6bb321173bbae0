"""Wallet: an address and an EIP-712 signer, built from any eth-account signer, a key, a keystore or the environment.

Key material never appears in a repr, a log line, an exception message, or the locals of an x402pay frame in a
traceback: constructors that touch a key or a password report failures through `_secret_safe`, which drops the
original exception (its message or frames could hold the key) and raises a fresh `WalletError` from a frame that
holds neither.

Typed data of the shapes x402 signs, given to a wallet over a ``LocalAccount``, is signed through
`x402pay._schemes.fast712` (same bytes as eth-account, several times faster). The coincurve key that path needs is
made from the account's key on first use and lives only in the wallet's private slot; its failures are reported by
type, like a signer's.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, ParamSpec, TypeVar

from coincurve import PrivateKey
from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address

from x402pay._schemes import fast712
from x402pay.errors import SigningError, WalletError

if TYPE_CHECKING:  # eth-account takes half a second to import: a wallet made from a key signs without it
    from eth_account.messages import SignableMessage
    from eth_account.signers.base import BaseAccount

#: Environment variables read by `Wallet.from_env`.
ENV_PRIVATE_KEY: Final = "X402PAY_PRIVATE_KEY"
ENV_KEYSTORE: Final = "X402PAY_KEYSTORE"
ENV_KEYSTORE_PASSWORD: Final = "X402PAY_KEYSTORE_PASSWORD"  # noqa: S105 - a variable name, not a password

_SIGNATURE_LENGTH: Final = 65
_BAD_KEY: Final = "not a valid secp256k1 private key (expected 32 bytes: 64 hex digits, 0x optional)"

_P = ParamSpec("_P")
_T = TypeVar("_T")


def _secret_safe(func: Callable[_P, _T]) -> Callable[_P, _T]:
    """Re-raise any failure of `func` as a bare `WalletError`, with no chained exception and no secret locals."""

    @functools.wraps(func)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return func(*args, **kwargs)
        except WalletError as exc:
            message = str(exc)
        except Exception as exc:  # a foreign message may quote the key: keep only the type
            message = f"{func.__name__} failed unexpectedly ({type(exc).__name__})"
        # Raised outside the except block so that no __context__ links back to frames holding the key.
        del args, kwargs
        raise WalletError(message)

    return wrapper


def _load_keystore(path: Path) -> dict[str, Any]:
    try:
        keystore = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise WalletError(f"cannot read keystore {str(path)!r}: {exc.strerror or type(exc).__name__}") from None
    except (ValueError, UnicodeDecodeError):
        raise WalletError(f"keystore {str(path)!r} is not JSON") from None
    if not isinstance(keystore, dict) or ("crypto" not in keystore and "Crypto" not in keystore):
        raise WalletError(f"keystore {str(path)!r} is not a v3 JSON keystore (no 'crypto' section)")
    return keystore


def _decrypt(keystore: dict[str, Any], password: str, where: str) -> bytes:
    from eth_account import Account

    try:
        return bytes(Account.decrypt(keystore, password))
    except (KeyError, TypeError, NotImplementedError):
        raise WalletError(f"keystore {where} is not a v3 JSON keystore eth-account can open") from None
    except ValueError:
        raise WalletError(f"cannot decrypt keystore {where}: wrong password or damaged file") from None


def _key_bytes(key: str | bytes) -> bytes:
    """The 32 bytes of a private key given as bytes or as 64 hex digits (``0x`` optional); WalletError else."""
    if isinstance(key, str):
        digits = key.strip()
        digits = digits[2:] if digits[:2].lower() == "0x" else digits
        try:
            key = bytes.fromhex(digits) if len(digits) == 64 and digits.isascii() and digits.isalnum() else b""
        except ValueError:
            key = b""
    elif not isinstance(key, bytes):
        raise WalletError(f"a private key is str or bytes, got {type(key).__name__}")
    if len(key) != 32:
        raise WalletError(_BAD_KEY)
    return key


def _address_of(key: PrivateKey) -> ChecksumAddress:
    """The Ethereum address of `key`: the last 20 bytes of the Keccak-256 of its uncompressed public key."""
    return to_checksum_address(fast712.keccak256(key.public_key.format(compressed=False)[1:])[-20:])


def _is_plain_local_account(signer: object) -> bool:
    if signer is None:
        return False
    from eth_account.signers.local import LocalAccount  # loaded already: there is a signer

    return type(signer) is LocalAccount


class Wallet:
    """A payer: its checksummed `address` and EIP-712 signing, over any eth-account signer.

    Build one with `Wallet(signer)` (a ``LocalAccount`` or any ``BaseAccount``, e.g. a hardware or KMS signer),
    `from_key`, `from_keystore` or `from_env`. The repr shows the address only.
    """

    __slots__ = ("_address", "_secp_key", "_signer")

    def __init__(self, signer: BaseAccount) -> None:
        from eth_account.signers.base import BaseAccount

        if not isinstance(signer, BaseAccount):
            raise WalletError(f"a Wallet needs an eth-account signer (BaseAccount), got {type(signer).__name__}")
        self._signer: BaseAccount | None = signer
        self._address = to_checksum_address(signer.address)
        self._secp_key: PrivateKey | None = None

    @classmethod
    @_secret_safe
    def from_key(cls, key: str | bytes) -> Wallet:
        """A wallet for a raw secp256k1 private key: 32 bytes, or 64 hex digits with or without ``0x``."""
        try:
            secp_key = PrivateKey(_key_bytes(key))
        except ValueError:  # zero, or not below the curve order
            raise WalletError(_BAD_KEY) from None
        wallet = cls.__new__(cls)
        wallet._signer = None  # an eth-account LocalAccount is made only if something needs one (`_account`)
        wallet._secp_key = secp_key
        wallet._address = _address_of(secp_key)
        return wallet

    @classmethod
    @_secret_safe
    def from_keystore(cls, path: str | os.PathLike[str], password: str) -> Wallet:
        """A wallet from a standard v3 JSON keystore file (scrypt or pbkdf2), decrypted with `password`."""
        where = repr(os.fspath(path))
        keystore = _load_keystore(Path(path))
        wallet = cls.from_key(_decrypt(keystore, password, where))
        stated = keystore.get("address")
        if isinstance(stated, str) and stated.lower().removeprefix("0x") != wallet.address[2:].lower():
            raise WalletError(f"keystore {where} states address {stated[:42]!r} but holds the key of {wallet.address}")
        return wallet

    @classmethod
    @_secret_safe
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Wallet:
        """A wallet from ``X402PAY_PRIVATE_KEY``, or from ``X402PAY_KEYSTORE`` + ``X402PAY_KEYSTORE_PASSWORD``."""
        key = environ.get(ENV_PRIVATE_KEY, "").strip()
        keystore = environ.get(ENV_KEYSTORE, "").strip()
        if key and keystore:
            raise WalletError(f"both {ENV_PRIVATE_KEY} and {ENV_KEYSTORE} are set; set only one")
        if key:
            try:
                return cls.from_key(key)
            except WalletError as exc:
                raise WalletError(f"{ENV_PRIVATE_KEY}: {exc}") from None
        if not keystore:
            raise WalletError(
                f"no wallet configured: set {ENV_PRIVATE_KEY}, or {ENV_KEYSTORE} and {ENV_KEYSTORE_PASSWORD}"
            )
        if ENV_KEYSTORE_PASSWORD not in environ:
            raise WalletError(f"{ENV_KEYSTORE} is set but {ENV_KEYSTORE_PASSWORD} is missing")
        return cls.from_keystore(keystore, environ[ENV_KEYSTORE_PASSWORD])

    @classmethod
    @_secret_safe
    def new_keystore(
        cls, password: str, *, kdf: Literal["scrypt", "pbkdf2"] = "scrypt", iterations: int | None = None
    ) -> tuple[Wallet, dict[str, Any]]:
        """A wallet with a fresh random key, and its v3 JSON keystore encrypted with `password`.

        `kdf` and `iterations` are eth-account's; the default (scrypt, n=2**18) takes about a second to open.
        """
        if not password:
            raise WalletError("refusing to write a keystore with an empty password")
        from eth_account import Account

        account = Account.create()
        keystore = Account.encrypt(account.key, password, kdf=kdf, iterations=iterations)
        return cls(account), keystore

    @property
    def address(self) -> ChecksumAddress:
        """The payer's EIP-55 checksummed address."""
        return self._address

    @property
    def signs_locally(self) -> bool:
        """Whether signing is pure CPU in this process (a key, or a plain ``LocalAccount``), not a remote signer."""
        return self._secp_key is not None or _is_plain_local_account(self._signer)

    def sign_typed_data(self, typed_data: dict[str, Any]) -> bytes:
        """Sign EIP-712 `typed_data` (eth-account's ``full_message`` form); the 65-byte ``r || s || v`` signature."""
        fast = self._sign_fast(typed_data)
        if fast is not None:
            return fast
        from eth_abi.exceptions import EncodingError
        from eth_account.messages import encode_typed_data
        from eth_utils.exceptions import ValidationError

        try:
            signable = encode_typed_data(full_message=typed_data)
        except (ValueError, TypeError, KeyError, EncodingError, ValidationError) as exc:
            raise SigningError(f"malformed EIP-712 typed data: {exc}") from exc
        signature = self._sign(signable)
        if len(signature) != _SIGNATURE_LENGTH:
            raise SigningError(f"the signer returned {len(signature)} bytes, not a 65-byte r||s||v signature")
        return signature

    def sign_transaction(self, transaction: dict[str, Any]) -> bytes:
        """Sign an EVM transaction (a web3 transaction dict); the raw signed bytes, ready to send."""
        try:
            return bytes(self._account().sign_transaction(transaction).raw_transaction)
        except Exception as exc:  # a signer's message may quote key material: keep only the type
            failure = type(exc).__name__
        raise SigningError(f"the signer of {self._address} could not sign the transaction ({failure})")

    def permit2_allowance(self, web3: Any, token: str) -> int:
        """How much of `token` Permit2 may move for this wallet (read on `web3`'s chain)."""
        from x402pay._allowance import permit2_allowance

        return permit2_allowance(web3, token, self._address)

    def approve_permit2(self, web3: Any, token: str, amount: int | None = None) -> str:
        """Send the one-time ``approve(Permit2, amount)`` (default: unlimited) and wait for it; the tx hash.

        This is a real transaction: the wallet pays its gas.
        """
        from x402pay._allowance import MAX_UINT256, approve_permit2

        return approve_permit2(web3, self, token, MAX_UINT256 if amount is None else amount)

    def _account(self) -> BaseAccount:
        """The eth-account signer (for a wallet made from a key, a ``LocalAccount`` made on first use)."""
        if self._signer is None:
            from eth_account import Account

            assert self._secp_key is not None  # noqa: S101 - a wallet has a signer or a key
            self._signer = Account.from_key(self._secp_key.secret)
        return self._signer

    def _sign_fast(self, typed_data: dict[str, Any]) -> bytes | None:
        """The fast712 signature when the wallet holds a key (made from one, or over a plain ``LocalAccount``) and
        fast712 knows the shape; else None.

        A ``LocalAccount`` subclass may sign differently, so only the exact class takes this path.
        """
        if self._secp_key is None and not _is_plain_local_account(self._signer):
            return None
        digest = fast712.typed_data_digest(typed_data)
        if digest is None:
            return None
        try:
            if self._secp_key is None:
                self._secp_key = PrivateKey(bytes(self._signer.key))  # type: ignore[union-attr]
            return fast712.sign_digest(self._secp_key, digest)
        except Exception as exc:  # coincurve's message could quote its input: keep only the type
            failure = type(exc).__name__
        raise SigningError(f"the signer of {self._address} failed ({failure})")

    def _sign(self, signable: SignableMessage) -> bytes:
        try:
            return bytes(self._account().sign_message(signable).signature)
        except Exception as exc:  # a signer's message may quote key material: keep only the type
            failure = type(exc).__name__
        raise SigningError(f"the signer of {self._address} failed ({failure})")

    def __repr__(self) -> str:
        return f"Wallet(address={self._address!r})"

    def __str__(self) -> str:
        return self._address

    def __reduce__(self) -> str | tuple[Any, ...]:
        # A pickle would write the key to wherever the bytes go; keys belong in encrypted keystores only.
        raise TypeError("a Wallet cannot be pickled (it would write its key out); use an encrypted keystore")
