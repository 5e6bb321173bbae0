"""Verification without a chain: claims, checks decided before I/O, and the sans-IO batch fed by hand."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from web3 import HTTPProvider, Web3

from x402pay.verify import Check, Claim, ReceiptMismatch, Verdict, Verification, verify_claim
from x402pay.verify._chain import Rules
from x402pay.verify._steps import Batch, RpcFailure, unpack

PAYER = "0x" + "aa" * 20
PAY_TO = "0x" + "bb" * 20
ASSET = "0x" + "cc" * 20
TX = "0x" + "12" * 32
NONCE = "0x" + "34" * 32


def claim(**fields: Any) -> Claim:
    terms: dict[str, Any] = {
        "chain_id": 31337,
        "asset": ASSET,
        "payer": PAYER,
        "pay_to": PAY_TO,
        "scheme": "exact",
        "method": "eip3009",
        "signed_amount": 1_000,
        "nonce": NONCE,
        "valid_before": 2_000_000_000,
        "tx_hash": TX,
    }
    return Claim(**{**terms, **fields})


# -- Claim ----------------------------------------------------------------------------------------------------


def test_a_claim_checksums_addresses_and_reads_an_empty_tx_hash_as_none() -> None:
    made = claim(tx_hash="")
    assert made.payer == Web3.to_checksum_address(PAYER)
    assert made.tx_hash is None
    assert made.amount == 1_000
    assert claim(claimed_amount=7).amount == 7


@pytest.mark.parametrize(
    "fields",
    [
        {"payer": "0x1234"},
        {"scheme": "batch-settlement"},
        {"method": "erc7710"},
        {"scheme": "upto", "method": "eip3009"},
        {"nonce": "12345"},
        {"method": "permit2", "nonce": NONCE},
        {"method": "permit2", "nonce": str(2**256)},
    ],
)
def test_a_claim_that_cannot_be_verified_is_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"Claim|verify|upto"):
        claim(**fields)


def test_permit2_nonces_are_decimal() -> None:
    assert claim(method="permit2", nonce=str(2**256 - 1)).nonce_int == 2**256 - 1


# -- checks decided before any I/O ----------------------------------------------------------------------------

NOWHERE = Web3(HTTPProvider("http://127.0.0.1:9"))


@pytest.mark.parametrize(
    ("fields", "check", "claimed", "actual"),
    [
        ({"claimed_amount": 999}, Check.SIGNED_AMOUNT, 999, 1_000),
        (
            {"scheme": "upto", "method": "permit2", "nonce": "5", "claimed_amount": 1_001},
            Check.SIGNED_AMOUNT,
            1_001,
            1_000,
        ),
        ({"claimed_amount": -1}, Check.SIGNED_AMOUNT, -1, 1_000),
        ({"tx_hash": "0xabc"}, Check.TRANSACTION, "0xabc", None),
        ({"claimed_chain_id": 1}, Check.CHAIN_ID, 1, 31337),
    ],
)
def test_lies_visible_in_the_claim_itself_need_no_rpc(
    fields: dict[str, Any], check: Check, claimed: object, actual: object
) -> None:
    verification = verify_claim(NOWHERE, claim(**fields))
    assert (verification.verdict, verification.check) == (Verdict.MISMATCH, check)
    assert (verification.claimed, verification.actual) == (claimed, actual)


def test_receipt_mismatch_names_the_check_and_both_values() -> None:
    verification = Verification(claim(), Verdict.MISMATCH, Check.AMOUNT, "wrong amount", 5, 4)
    with pytest.raises(ReceiptMismatch, match=r"amount: wrong amount \(claimed 5, actual 4\)"):
        verification.raise_for_mismatch()


# -- the batch, fed by hand -----------------------------------------------------------------------------------

RECEIPT = {"status": "0x1", "blockNumber": "0x10", "logs": []}
HEAD = {"number": "0x10", "timestamp": "0x1"}


def test_the_claims_of_a_batch_share_chain_id_and_head_requests() -> None:
    batch = Batch([claim(), claim(tx_hash="0x" + "56" * 32)], Rules())
    methods = [method for method, _ in batch.requests()]
    assert methods == ["eth_chainId", "eth_getBlockByNumber", "eth_getTransactionReceipt", "eth_getTransactionReceipt"]


def test_a_failed_request_leaves_only_its_claim_pending() -> None:
    batch = Batch([claim(), claim(tx_hash="0x" + "56" * 32)], Rules())
    batch.feed(["0x7a69", HEAD, RpcFailure("the RPC answered an error: boom"), RECEIPT])
    assert batch.requests() == []
    failed, judged = batch.verifications()
    assert (failed.verdict, failed.check, failed.reason) == (
        Verdict.PENDING,
        Check.RPC,
        "the RPC answered an error: boom",
    )
    assert (judged.verdict, judged.check) == (Verdict.MISMATCH, Check.TRANSFER)


def test_a_malformed_answer_leaves_the_claim_pending() -> None:
    batch = Batch([claim()], Rules())
    batch.feed(["0x7a69", HEAD, {"status": "0x1", "logs": "nonsense"}])
    (verification,) = batch.verifications()
    assert (verification.verdict, verification.check) == (Verdict.PENDING, Check.RPC)
    assert "could not be read" in verification.reason


def test_a_missing_receipt_asks_for_the_transaction_next() -> None:
    batch = Batch([claim()], Rules())
    batch.feed(["0x7a69", HEAD, None])
    assert batch.requests() == [("eth_getTransactionByHash", [TX])]
    batch.feed([None])
    (verification,) = batch.verifications()
    assert (verification.verdict, verification.check) == (Verdict.NOT_FOUND, Check.TRANSACTION)


def test_a_used_permit2_nonce_without_transfers_is_not_found() -> None:
    located = claim(method="permit2", nonce="0", tx_hash=None)
    batch = Batch([located], Rules())
    batch.feed(["0x7a69", HEAD, "0x" + "00" * 31 + "01"])
    assert [method for method, _ in batch.requests()] == ["eth_getLogs"]
    batch.feed([[]])
    (verification,) = batch.verifications()
    assert (verification.verdict, verification.check) == (Verdict.NOT_FOUND, Check.LOCATE)


def test_unpack_maps_error_objects_and_bad_batches_to_failures() -> None:
    assert unpack([{"result": 1}, {"error": {"message": "nope"}}], 2) == [
        1,
        RpcFailure("the RPC answered an error: nope"),
    ]
    assert (
        unpack({"error": {"message": "batch too large"}}, 2)
        == [RpcFailure("the RPC answered an error: batch too large")] * 2
    )
    assert all(isinstance(item, RpcFailure) for item in unpack([{"result": 1}], 2))


def test_a_claim_is_a_value() -> None:
    assert claim() == claim()
    assert dataclasses.replace(claim(), tx_hash=None) == claim(tx_hash="")


def test_the_public_names_are_sorted_and_documented() -> None:
    import x402pay.verify

    assert x402pay.verify.__all__ == sorted(x402pay.verify.__all__)
    for name in x402pay.verify.__all__:
        value = getattr(x402pay.verify, name)
        assert not callable(value) or value.__doc__, name
