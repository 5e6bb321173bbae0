"""A payer, a receiver side and the batch settlement contract on the devnet, driven with x402pay's own digests.

Everything a test signs goes through `x402pay._schemes.channel` / `channel_deposit`, so a contract that accepts the
signature also proves the digest. Transactions go through web3's ``transact`` from anvil's unlocked accounts: a revert
surfaces from gas estimation, with the custom error's data.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

import pytest
from coincurve import PrivateKey
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractCustomError, ContractLogicError

from x402pay._schemes import channel, channel_deposit
from x402pay._schemes.fast712 import sign_digest
from x402pay.testing import Devnet

ZERO = "0x" + "00" * 20
DELAY = 900


def sign(account: LocalAccount, digest: bytes) -> bytes:
    """`account`'s 65-byte signature of `digest`."""
    return sign_digest(PrivateKey(bytes(account.key)), digest)


def transact(call: Any, sender: str) -> Any:
    """Send `call` from the unlocked `sender` and return its receipt (it must succeed)."""
    web3: Web3 = call.w3
    receipt = web3.eth.wait_for_transaction_receipt(call.transact({"from": sender}))
    assert receipt["status"] == 1
    return receipt


def reverts_with(error: str, call: Any, sender: str) -> None:
    """Assert that sending `call` from `sender` reverts with the custom error `error` (e.g. ``"ZeroRefund()"``)."""
    with pytest.raises(ContractCustomError) as caught:
        transact(call, sender)
    data = bytes.fromhex(str(caught.value.data).removeprefix("0x"))
    assert data[:4] == Web3.keccak(text=error)[:4], f"expected {error}, got 0x{data.hex()}"


def reverts_with_reason(reason: str, call: Any, sender: str) -> None:
    """Assert that sending `call` reverts with the ``Error(string)`` `reason`."""
    with pytest.raises(ContractLogicError, match=reason):
        transact(call, sender)


def events(receipt: Any, contract: Contract, name: str) -> list[Any]:
    """The `name` events `contract` itself emitted in `receipt` (logs of other addresses are not decoded)."""
    own = [log for log in receipt["logs"] if log["address"] == contract.address]
    topic = Web3.keccak(text=_event_signature(contract, name))
    return [contract.events[name]().process_log(log) for log in own if log["topics"][0] == topic]


def _event_signature(contract: Contract, name: str) -> str:
    abi = next(item for item in contract.abi if item["type"] == "event" and item["name"] == name)

    def kind(item: dict[str, Any]) -> str:
        if item["type"].startswith("tuple"):
            return "(" + ",".join(kind(c) for c in item["components"]) + ")" + item["type"][5:]
        return str(item["type"])

    return f"{name}({','.join(kind(item) for item in abi['inputs'])})"


@dataclass
class Channels:
    """The devnet's settlement contract, with a receiver (the payee) and a receiverAuthorizer key of its own."""

    devnet: Devnet
    receiver_authorizer: LocalAccount = field(default_factory=lambda: Account.from_key(secrets.token_bytes(32)))

    @property
    def settlement(self) -> Contract:
        return self.devnet.contract("X402BatchSettlement", self.devnet.batch_settlement)

    @property
    def usdc(self) -> Contract:
        return self.devnet.contract("TestUSDC", self.devnet.usdc)

    @property
    def sender(self) -> str:
        """Who relays deposits, signed claims and refunds (pays their gas): the devnet's facilitator."""
        return str(self.devnet.facilitator.address)

    def config(self, payer: LocalAccount, **overrides: Any) -> channel.ChannelConfig:
        fields: dict[str, Any] = {
            "payer": payer.address,
            "payer_authorizer": payer.address,
            "receiver": self.devnet.payee.address,
            "receiver_authorizer": self.receiver_authorizer.address,
            "token": self.devnet.usdc,
            "withdraw_delay": DELAY,
        }
        return channel.ChannelConfig(**{**fields, **overrides})

    def id_of(self, config: channel.ChannelConfig) -> bytes:
        return channel.channel_id(config, self.devnet.chain_id)

    def state(self, config: channel.ChannelConfig) -> tuple[int, int]:
        """``channels(id)``: (balance, totalClaimed)."""
        balance, claimed = self.settlement.functions.channels(self.id_of(config)).call()
        return int(balance), int(claimed)

    def balance_of(self, who: str) -> int:
        return int(self.usdc.functions.balanceOf(who).call())

    # -- deposits ---------------------------------------------------------------------------------------------

    def eip3009_data(self, config: channel.ChannelConfig, payer: LocalAccount, amount: int, **over: Any) -> bytes:
        """The ERC-3009 collector's data: the payer's ReceiveWithAuthorization bound to `config`'s channel."""
        salt = over.get("salt", secrets.randbits(256))
        valid_before = over.get("valid_before", self.devnet.chain_time() + 600)
        nonce = channel_deposit.erc3009_deposit_nonce(over.get("bound_to", self.id_of(config)), salt)
        digest = channel_deposit.receive_with_authorization_digest(
            token_name="USD Coin",
            token_version="2",
            chain_id=self.devnet.chain_id,
            token=self.devnet.usdc,
            payer=payer.address,
            value=amount,
            valid_after=0,
            valid_before=valid_before,
            nonce=nonce,
        )
        signature = sign(payer, digest)
        return channel_deposit.erc3009_collector_data(
            valid_after=0, valid_before=valid_before, salt=salt, signature=signature
        )

    def permit2_data(
        self, config: channel.ChannelConfig, payer: LocalAccount, amount: int, eip2612_permit: bytes = b""
    ) -> bytes:
        """The Permit2 collector's data: the payer's witness transfer bound to `config`'s channel."""
        nonce, deadline = secrets.randbits(256), self.devnet.chain_time() + 600
        digest = channel_deposit.permit2_deposit_digest(
            chain_id=self.devnet.chain_id,
            token=self.devnet.usdc,
            amount=amount,
            nonce=nonce,
            deadline=deadline,
            channel=self.id_of(config),
        )
        return channel_deposit.permit2_collector_data(
            nonce=nonce, deadline=deadline, signature=sign(payer, digest), eip2612_permit=eip2612_permit
        )

    def deposit_call(self, config: channel.ChannelConfig, amount: int, collector: str, data: bytes) -> Any:
        return self.settlement.functions.deposit(config.as_abi(), amount, collector, data)

    def deposit(self, config: channel.ChannelConfig, payer: LocalAccount, amount: int) -> Any:
        """An EIP-3009 deposit of `amount` into `config`, relayed by the facilitator."""
        data = self.eip3009_data(config, payer, amount)
        return transact(self.deposit_call(config, amount, self.devnet.erc3009_collector, data), self.sender)

    # -- vouchers, claims, refunds ----------------------------------------------------------------------------

    def voucher(self, config: channel.ChannelConfig, ceiling: int, signer: LocalAccount) -> bytes:
        return sign(signer, channel.voucher_digest(self.id_of(config), ceiling, self.devnet.chain_id))

    def row(self, config: channel.ChannelConfig, ceiling: int, signature: bytes, claimed: int) -> tuple[Any, ...]:
        """One ``VoucherClaim`` as the contract takes it."""
        return ((config.as_abi(), ceiling), signature, claimed)

    def batch_signature(self, rows: list[tuple[Any, ...]], signer: LocalAccount | None = None) -> bytes:
        entries = [channel.ClaimEntry(self._row_id(row), row[0][1], row[2]) for row in rows]
        digest = channel.claim_batch_digest(entries, self.devnet.chain_id)
        return sign(signer or self.receiver_authorizer, digest)

    def claim_call(self, rows: list[tuple[Any, ...]], signature: bytes | None = None) -> Any:
        return self.settlement.functions.claimWithSignature(rows, signature or self.batch_signature(rows))

    def claim(self, rows: list[tuple[Any, ...]]) -> Any:
        """``claimWithSignature`` of `rows`, signed by the receiverAuthorizer, relayed by the facilitator."""
        return transact(self.claim_call(rows), self.sender)

    def refund_call(self, config: channel.ChannelConfig, amount: int, signer: LocalAccount | None = None) -> Any:
        """``refundWithSignature`` of `amount` at the channel's current refund nonce."""
        channel_id = self.id_of(config)
        nonce = int(self.settlement.functions.refundNonce(channel_id).call())
        digest = channel.refund_digest(channel_id, nonce, amount, self.devnet.chain_id)
        signature = sign(signer or self.receiver_authorizer, digest)
        return self.settlement.functions.refundWithSignature(config.as_abi(), amount, nonce, signature)

    def _row_id(self, row: tuple[Any, ...]) -> bytes:
        return self.id_of(channel.ChannelConfig(*row[0][0]))


#: What a contract wallet's ``isValidSignature`` answers: the EIP-1271 magic value, or a refusal.
ACCEPTS, REFUSES = "1626ba7e", "ffffffff"


def contract_wallet(devnet: Devnet, address: str, answer: str) -> str:
    """Give `address` code whose ``isValidSignature`` (indeed every call) returns ``bytes4(answer)``.

    Called again on the same address, it changes the answer. The wallet approves Permit2 once, while it has no
    code yet (anvil impersonates it).
    """
    web3 = devnet.web3()
    wallet = Web3.to_checksum_address(address)
    if not web3.eth.get_code(wallet):
        web3.provider.make_request("anvil_impersonateAccount", [wallet])
        web3.provider.make_request("anvil_setBalance", [wallet, hex(10**18)])
        usdc = devnet.contract("TestUSDC", devnet.usdc)
        transact(usdc.functions.approve(devnet.permit2, 2**256 - 1), wallet)
    # PUSH4 answer, PUSH1 224, SHL, PUSH1 0, MSTORE, PUSH1 32, PUSH1 0, RETURN: returns bytes4(answer).
    web3.provider.make_request("anvil_setCode", [wallet, f"0x63{answer}60e01b60005260206000f3"])
    return wallet
