"""The payer's pure channel parts: deposit sizing under the policy's cap, the option's terms, what is signed, and
what a server's report or corrective 402 may make us believe. (The same parts on anvil: tests/channels.)"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from eth_account import Account

from x402pay import SpendPolicy, Wallet
from x402pay._channel_chain import OnChain
from x402pay._channel_checks import Expected, problem_with, recover
from x402pay._channel_lease import lease_seconds
from x402pay._channel_sign import DepositTerms, sign_request
from x402pay._channel_terms import channel_terms, deposit_size
from x402pay._httpx import timeout_of
from x402pay._protocol.channel_extra import ChannelState, ResponseExtra, VoucherState
from x402pay._protocol.channel_wire import DepositPayload, Erc3009Deposit, Permit2Deposit
from x402pay._protocol.models import PaymentRequirements
from x402pay._schemes import channel, channel_deposit
from x402pay._schemes.fast712 import recover_signer
from x402pay.errors import SigningError, SpendCapExceeded

TOKEN = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
RECEIVER = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
AUTHORIZER = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"
WALLET = Wallet.from_key("0x" + "11" * 32)
STRANGER = Account.from_key("0x" + "22" * 32)
CHAIN = 31337


def option(**extra: Any) -> PaymentRequirements:
    fields = {"receiverAuthorizer": AUTHORIZER, "withdrawDelay": 900, "name": "USD Coin", "version": "2"}
    return PaymentRequirements(scheme="batch-settlement", network=f"eip155:{CHAIN}", amount=1_000, asset=TOKEN,
                               pay_to=RECEIVER, max_timeout_seconds=600, extra=fields | extra)  # fmt: skip


@pytest.mark.parametrize(
    ("needed", "hint", "cap", "deposit"),
    [
        (1_000, 10_000, 50_000, 10_000),  # the server's hint
        (1_000, None, 50_000, 10_000),  # no hint: ten requests' worth
        (1_000, 500, 50_000, 10_000),  # a hint below one request is no hint
        (1_000, 10**30, 5_000, 5_000),  # a hint far above the cap: the cap
        (7_000, 2_000, 50_000, 7_000),  # never less than what the request needs
    ],
)
def test_a_deposit_is_the_hint_or_ten_requests_within_the_cap(
    needed: int, hint: int | None, cap: int, deposit: int
) -> None:
    assert deposit_size(needed=needed, amount=1_000, hint=hint, cap=cap) == deposit


def test_a_request_that_needs_more_than_the_cap_is_refused() -> None:
    with pytest.raises(SpendCapExceeded, match="max_deposit 999"):
        deposit_size(needed=1_000, amount=1_000, hint=None, cap=999)


def test_the_policy_caps_deposits_at_ten_requests_unless_told_and_signs_channels_only_when_listed() -> None:
    assert SpendPolicy(max_per_request=1_000).deposit_cap == 10_000
    assert SpendPolicy(max_per_request=1_000, max_deposit=3_000).deposit_cap == 3_000
    assert "batch-settlement" not in SpendPolicy(max_per_request=1).schemes
    with pytest.raises(ValueError, match="max_deposit"):
        SpendPolicy(max_per_request=1, max_deposit=-1)
    with pytest.raises(TypeError, match="max_deposit"):
        SpendPolicy(max_per_request=1, max_deposit=1.5)  # type: ignore[arg-type]
    policy = SpendPolicy(max_per_request=1_000, assets={TOKEN}, schemes=("batch-settlement",))
    assert policy.refusal(option(), "http://shop") is None


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        ({"receiverAuthorizer": "0x" + "00" * 20}, "zero address"),
        ({"withdrawDelay": 60}, "outside"),
        ({"name": None}, "name and version"),
        ({"assetTransferMethod": "transfer"}, "eip3009 or permit2"),
    ],
)
def test_a_channel_option_that_cannot_be_paid_is_refused_saying_why(extra: dict[str, Any], why: str) -> None:
    fields = {key: value for key, value in extra.items() if value is not None}
    requirement = option(**fields)
    if extra.get("name", "") is None:
        requirement = PaymentRequirements.model_validate(
            requirement.to_wire() | {"extra": {"receiverAuthorizer": AUTHORIZER, "withdrawDelay": 900}}
        )
    with pytest.raises(SigningError, match=why):
        channel_terms(requirement)
    policy = SpendPolicy(max_per_request=1_000, assets={TOKEN}, schemes=("batch-settlement",))
    assert (policy.refusal(requirement, "http://shop") or "").startswith("channel option:")


@pytest.mark.parametrize("method", ["eip3009", "permit2"])
def test_the_voucher_and_the_deposit_are_signed_by_the_wallet_for_this_channel(method: str) -> None:
    terms = channel_terms(option(assetTransferMethod=method))
    config = terms.config(WALLET.address)
    identity = channel.channel_id(config, CHAIN)
    signed = sign_request(WALLET, terms, config, identity, CHAIN, 3_000, DepositTerms(10_000, 1_900_000_000))
    payload = signed.payload
    assert isinstance(payload, DepositPayload)
    assert (payload.voucher.max_claimable_amount, payload.deposit.amount, signed.ceiling) == (3_000, 10_000, 3_000)
    assert recover_signer(channel.voucher_digest(identity, 3_000, CHAIN), payload.voucher.signature) == (
        WALLET.address.lower()
    )
    auth = payload.deposit.authorization
    if isinstance(auth, Erc3009Deposit):
        nonce = channel_deposit.erc3009_deposit_nonce(identity, auth.salt)
        assert signed.deposit_nonce == "0x" + nonce.hex()
        digest = channel_deposit.receive_with_authorization_digest(
            token_name="USD Coin", token_version="2", chain_id=CHAIN, token=TOKEN, payer=WALLET.address,
            value=10_000, valid_after=0, valid_before=1_900_000_000, nonce=nonce,
        )  # fmt: skip
    else:
        assert isinstance(auth, Permit2Deposit)
        assert auth.channel_id == identity
        digest = channel_deposit.permit2_deposit_digest(chain_id=CHAIN, token=TOKEN, amount=10_000, nonce=auth.nonce,
                                                        deadline=1_900_000_000, channel=identity)  # fmt: skip
    assert recover_signer(digest, auth.signature) == WALLET.address.lower()


EXPECTED = Expected(channel_id=b"\x01" * 32, maximum=1_000, charged_before=4_000, balance=10_000)


def report(
    charged: int, cumulative: int | None = 5_000, balance: int = 10_000, channel_id: bytes = b"\x01" * 32
) -> ResponseExtra:
    state = ChannelState(channel_id, balance, 0, charged_cumulative_amount=cumulative)
    return ResponseExtra(charged_amount=charged, channel_state=state)


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        (report(1_000), None),
        (report(600, cumulative=4_600), None),
        (ResponseExtra(charged_amount=1_000), None),  # no state: only the charge to check
        (report(1_001, cumulative=5_001), "above this request's maximum"),
        (report(1_000, cumulative=6_000), "cumulative charge of 6000"),
        (report(1_000, balance=9_000), "balance of 9000"),
        (report(1_000, channel_id=b"\x02" * 32), "not the one paid through"),
        (ResponseExtra(), "no chargedAmount"),
    ],
)
def test_a_report_is_believed_only_when_it_agrees_with_what_we_know(extra: ResponseExtra, problem: str | None) -> None:
    found = problem_with(extra, EXPECTED)
    assert (found is None) if problem is None else (problem in str(found))


def corrective(charged: int, ceiling: int, signer: Any) -> tuple[ChannelState, VoucherState]:
    identity = b"\x01" * 32
    digest = channel.voucher_digest(identity, ceiling, CHAIN)
    signature = bytes(signer.unsafe_sign_hash(digest).signature)
    return ChannelState(identity, 10_000, 0, charged_cumulative_amount=charged), VoucherState(ceiling, signature)


OURS = Account.from_key("0x" + "11" * 32)


@pytest.mark.parametrize(
    ("charged", "ceiling", "signer", "claimed", "believed"),
    [
        (3_000, 3_000, OURS, 0, (3_000, 3_000, True)),  # our own voucher: believed
        (3_000, 3_000, STRANGER, 0, (0, 0, False)),  # someone else's: the chain only
        (3_000, 2_000, OURS, 0, (0, 0, False)),  # a charge above the voucher it shows
        (1_000, 3_000, OURS, 2_000, (2_000, 0, False)),  # below what the chain shows claimed
    ],
)
def test_a_corrective_402_is_believed_only_when_it_proves_our_own_voucher(
    charged: int, ceiling: int, signer: Any, claimed: int, believed: tuple[int, int, bool]
) -> None:
    state, voucher = corrective(charged, ceiling, signer)
    found = recover(b"\x01" * 32, CHAIN, OURS.address, state, voucher, OnChain(10_000, claimed))
    assert (found.charged, found.signed_max, found.proven) == believed


@pytest.mark.parametrize(
    ("timeouts", "lease"),
    [(None, 120), (httpx.Timeout(5), 120), (httpx.Timeout(600, connect=5), 3_600), (httpx.Timeout(None), 3_600)],
    ids=["unsaid", "httpx-default", "openai-sdk", "no-limit"],
)
def test_a_channel_lease_lasts_as_long_as_the_requests_timeouts(timeouts: httpx.Timeout | None, lease: int) -> None:
    request = httpx.Request("GET", "https://api.example/quote")
    if timeouts is not None:
        request.extensions["timeout"] = timeouts.as_dict()
    assert lease_seconds(timeout_of(request)) == lease
