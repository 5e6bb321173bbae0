"""Payment channels on the paid side without a chain: Price.channel's requirement, the channel store's reservations
and restart safety, the local state TTL."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from x402pay._protocol.channel_extra import ChannelExtra
from x402pay._schemes.channel import ChannelConfig, channel_id
from x402pay.server import ChannelRecord, ChannelStore, Price
from x402pay.server._channel_abi import BATCH_SETTLEMENT_ABI as CHANNEL_ABI
from x402pay.server._channel_rules import local_state_ttl
from x402pay.testing import load_artifact

USDC = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
PAYEE = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
AUTHORIZER = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
PAYER = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"


def test_a_channel_price_writes_the_sdks_extra() -> None:
    price = Price.channel(1_000, asset=USDC, receiver_authorizer=AUTHORIZER, token_name="USD Coin", token_version="2")
    requirement = price.requirement(network="eip155:31337", chain_id=31337, pay_to=PAYEE, ceiling=5, facilitator=None)
    assert requirement.scheme == "batch-settlement"
    assert requirement.amount == 1_000  # a client's upto ceiling does not lower a channel price
    extra = ChannelExtra.from_wire(requirement.extra)
    assert extra == ChannelExtra(AUTHORIZER, 900, "USD Coin", "2", "eip3009", 10_000)
    permit2 = Price.channel(1_000, asset=USDC, receiver_authorizer=AUTHORIZER, transfer="permit2", min_deposit=5_000)
    assert permit2.requirement(
        network="eip155:8453", chain_id=8453, pay_to=PAYEE, ceiling=None, facilitator=None
    ).extra == {  # no EIP-712 domain for a token unknown on that chain: Permit2 needs none
        "receiverAuthorizer": AUTHORIZER,
        "withdrawDelay": 900,
        "assetTransferMethod": "permit2",
        "minDeposit": "5000",
    }


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"receiver_authorizer": "nope"}, "receiver_authorizer"),
        ({"withdraw_delay": 899}, "withdraw_delay"),
        ({"withdraw_delay": 2_592_001}, "withdraw_delay"),
        ({"min_deposit": 999}, "min_deposit"),
    ],
)
def test_a_bad_channel_price_is_refused(options: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"asset": USDC, "receiver_authorizer": AUTHORIZER, **options}
    with pytest.raises(ValueError, match=message):
        Price.channel(1_000, **arguments)  # type: ignore[arg-type]


def record(charged: int = 3_000) -> ChannelRecord:
    config = ChannelConfig(PAYER, PAYER, PAYEE, AUTHORIZER, USDC, 900)
    return ChannelRecord(channel_id(config, 31337), config, charged, charged + 1_000, b"\x01" * 65, 10_000, 1_000)


def test_one_request_at_a_time_holds_a_channel() -> None:
    store, channel = ChannelStore(), record().channel_id
    token = store.reserve(channel, 30)
    assert token is not None
    assert store.reserve(channel, 30) is None  # busy
    assert store.get(channel) is None  # a reservation alone records nothing
    store.release(channel, "someone else's")
    assert store.reserve(channel, 30) is None  # only the holder's token releases it
    store.release(channel, token)
    assert store.all() == []  # the placeholder of a channel never paid on is gone
    assert store.reserve(channel, -1) is not None  # a reservation that ran out...
    assert store.reserve(channel, 30) is not None  # ...no longer holds the channel


def test_the_store_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "channels.sqlite3"
    first = ChannelStore(path)
    saved = record()
    token = first.reserve(saved.channel_id, 30)
    assert token is not None
    assert first._conn.execute("PRAGMA synchronous").fetchone() == (2,)  # a hold is not flushed; what follows is
    first.save(saved)
    first.release(saved.channel_id, token)
    first.close()

    again = ChannelStore(path)
    assert again.get(saved.channel_id) == saved
    assert saved.unclaimed == 2_000
    assert again.receivers() == [(PAYEE, USDC)]
    again.save(replace(saved, total_claimed=3_000))
    assert [r.unclaimed for r in again.all()] == [0]
    again.delete(saved.channel_id)
    assert again.get(saved.channel_id) is None
    assert again.receivers() == [(PAYEE, USDC)]  # a sweep still knows where claimed money goes


def test_the_local_check_trusts_the_mirror_for_a_third_of_the_delay_within_bounds() -> None:
    assert local_state_ttl(900) == 300
    assert local_state_ttl(60) == 30
    assert local_state_ttl(86_400) == 300


def test_a_request_saved_after_a_claim_does_not_undo_it() -> None:
    store, read_before_the_claim = ChannelStore(), record()
    store.save(read_before_the_claim)
    store.mark_claimed(read_before_the_claim.channel_id, 3_000)  # the claims manager, while a request runs
    store.save(replace(read_before_the_claim, charged=4_000))  # that request's charge, from its older read
    saved = store.get(read_before_the_claim.channel_id)
    assert saved is not None
    assert (saved.charged, saved.total_claimed, saved.unclaimed) == (4_000, 3_000, 1_000)
    store.mark_claimed(saved.channel_id, 2_000)  # a stale claim never lowers it
    assert store.get(saved.channel_id) == saved


@pytest.mark.parametrize("fragment", CHANNEL_ABI, ids=lambda fragment: str(fragment["name"]))
def test_the_paid_sides_abi_is_the_contracts(fragment: dict[str, Any]) -> None:
    def kinds(items: list[dict[str, Any]]) -> tuple[Any, ...]:
        return tuple((item["type"], kinds(item.get("components", []))) for item in items)

    def shape(entry: dict[str, Any]) -> tuple[Any, ...]:
        return kinds(entry["inputs"]), kinds(entry["outputs"]), entry["stateMutability"]

    compiled = {entry["name"]: entry for entry in load_artifact("X402BatchSettlement")["abi"] if "name" in entry}
    assert shape(compiled[fragment["name"]]) == shape(fragment)
