"""Hostile challenges: every bad 402 ends in a typed error (or goes back to the caller), and no signature leaves.

The server answers every request with the challenge under test; "no signature left the process" is what the server
saw: one request, without ``PAYMENT-SIGNATURE`` or ``X-PAYMENT``.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest
from hostile_support import (
    CAP,
    FLAVOURS,
    PRICE,
    STRANGER,
    Balances,
    Hostile,
    Reply,
    b64,
    challenge,
    challenge_reply,
    challenge_then,
    client,
    fetch,
    policy,
    requirement,
    settle_honestly,
    unb64,
    v1_reply,
)

from x402pay import ChallengeError, NoAcceptableRequirement, SpendCapExceeded, payment_of
from x402pay.errors import X402PayError

pytestmark = pytest.mark.chain


def always(reply: Reply) -> Any:
    return lambda call: reply


def refused(hostile: Hostile, error: type[Exception], match: str | None = None, **options: Any) -> Exception:
    """GET through a paying client; `error` must be raised and the server must have seen no signature."""
    with pytest.raises(error, match=match) as caught:
        fetch("sync", hostile.devnet, hostile.url + "/report", **options)
    assert hostile.signatures == []
    assert len(hostile.seen) == 1
    return caught.value


# -- amounts and caps -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_an_amount_above_the_cap_signs_nothing(hostile: Hostile, flavour: str) -> None:
    balances = Balances(hostile.devnet)
    hostile.script = always(challenge_reply(challenge(requirement(hostile.devnet, amount=str(CAP + 1)))))

    with pytest.raises(SpendCapExceeded, match=f"max_per_request {CAP}"):
        fetch(flavour, hostile.devnet, hostile.url + "/report")

    assert hostile.signatures == []
    assert balances.moved() == 0


def test_an_amount_above_the_announced_ceiling_signs_nothing(hostile: Hostile) -> None:
    hostile.script = always(challenge_reply(challenge(requirement(hostile.devnet, amount=str(PRICE)))))

    refused(hostile, SpendCapExceeded, "announced ceiling 9999", headers={"x-x402-max-amount-wei": str(PRICE - 1)})

    assert hostile.seen[0].header("x-x402-max-amount-wei") == str(PRICE - 1)


def test_a_cheap_decoy_beside_an_expensive_option_pays_the_cheap_one_only(hostile: Hostile) -> None:
    cheap, dear = requirement(hostile.devnet, amount="7"), requirement(hostile.devnet, amount=str(CAP * 10))
    hostile.script = challenge_then(challenge_reply(challenge(dear, cheap)), settle_honestly)

    response = fetch("sync", hostile.devnet, hostile.url + "/report")

    payment = payment_of(response)
    assert payment is not None
    assert payment.signed_amount == 7
    assert len(hostile.signatures) == 1


BAD_AMOUNTS = [
    "-1",
    "1.5",
    "0x2710",
    "1e4",
    " 10000",
    "10000 ",
    "+10000",
    "\uff11\uff10\uff10",  # full-width digits: str.isdigit() says yes
    "²",  # a superscript two: str.isdigit() says yes too
    str(2**256),
    "9" * 1000,
    "ten thousand",
    "",
    -1,
    1.5,
    2**256,
    True,
    None,
    [10000],
    {"value": 10000},
]


@pytest.mark.parametrize("amount", BAD_AMOUNTS, ids=[repr(amount)[:24] for amount in BAD_AMOUNTS])
def test_a_malformed_amount_is_refused_with_the_reason(hostile: Hostile, amount: Any) -> None:
    option = requirement(hostile.devnet)
    option["amount"] = amount
    hostile.script = always(challenge_reply(challenge(option)))

    error = refused(hostile, NoAcceptableRequirement)

    assert isinstance(error, NoAcceptableRequirement)
    assert "option 0" in str(error)
    assert "amount" in error.refusals[0]


# -- who, what and where ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "fields", "reason"),
    [
        ({"payTo": STRANGER}, {"payees": frozenset({"0x" + "11" * 20})}, "payee"),
        ({"asset": STRANGER}, {}, "not a known USDC deployment"),
        ({"asset": STRANGER}, {"assets": frozenset({"0x" + "22" * 20})}, "asset"),
        ({"network": "eip155:8453"}, {}, "network eip155:8453 is not allowed"),
        ({"network": "base"}, {}, "network base is not allowed"),
        ({"network": "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp"}, {}, "not an EVM network"),
        ({"network": "eip155:0"}, {}, "out of range"),
        ({"network": "eip155:" + "9" * 30}, {}, "not an EVM network"),
        ({"payTo": "not an address"}, {}, "not an EVM address"),
        ({"asset": "0x1234"}, {}, "not an EVM address"),
        ({"scheme": "stream"}, {}, "scheme 'stream'"),
        ({"scheme": "upto", "extra": {"assetTransferMethod": "permit2"}}, {}, "facilitatorAddress"),
        ({"maxTimeoutSeconds": 0}, {}, "leaves no time"),
        ({"maxTimeoutSeconds": -60}, {}, "leaves no time"),
        ({"maxTimeoutSeconds": 1.5}, {}, "maxTimeoutSeconds"),
        ({"maxTimeoutSeconds": "forever"}, {}, "maxTimeoutSeconds"),
    ],
)
def test_an_option_outside_the_policy_signs_nothing(
    hostile: Hostile, changes: dict[str, Any], fields: dict[str, Any], reason: str
) -> None:
    hostile.script = always(challenge_reply(challenge(requirement(hostile.devnet, **changes))))
    rules = policy(hostile.devnet, **fields)
    if changes.get("network") in ("eip155:8453", "base"):
        rules = policy(hostile.devnet, **fields)  # the policy allows the devnet only

    error = refused(hostile, NoAcceptableRequirement, rules=rules)

    assert isinstance(error, NoAcceptableRequirement)
    assert reason in error.refusals[0]


def test_an_origin_outside_the_allow_list_signs_nothing(hostile: Hostile) -> None:
    hostile.script = always(challenge_reply(challenge(requirement(hostile.devnet))))

    refused(
        hostile, NoAcceptableRequirement, "origin", rules=policy(hostile.devnet, origins=frozenset({"https://a.b"}))
    )


@pytest.mark.parametrize("version", [0, 3, 99, "2", None, True])
def test_an_unknown_version_is_a_challenge_error(hostile: Hostile, version: Any) -> None:
    data = challenge(requirement(hostile.devnet))
    data["x402Version"] = version
    hostile.script = always(challenge_reply(data))

    refused(hostile, ChallengeError, "x402Version")


def test_a_v1_envelope_in_the_v2_header_is_a_challenge_error(hostile: Hostile) -> None:
    hostile.script = always(challenge_reply(challenge(requirement(hostile.devnet), version=1)))

    refused(hostile, ChallengeError, "expected 2")


def test_the_signed_window_is_capped_by_the_policy_not_by_a_ten_year_timeout(hostile: Hostile) -> None:
    ten_years = 10 * 365 * 24 * 3600
    clock = 1_900_000_000
    hostile.script = challenge_then(
        challenge_reply(challenge(requirement(hostile.devnet, maxTimeoutSeconds=ten_years))),
        lambda call: Reply(200, [], b"ok"),
    )

    fetch(
        "sync",
        hostile.devnet,
        hostile.url + "/report",
        rules=policy(hostile.devnet, max_lifetime=90),
        clock=lambda: clock,
    )

    (signature,) = hostile.signatures
    authorization = unb64(signature)["payload"]["authorization"]
    assert int(authorization["validBefore"]) == clock + 90
    assert int(authorization["validAfter"]) <= clock


# -- malformed encodings ----------------------------------------------------------------------------------------


def _b64_raw(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


MALFORMED_HEADERS = {
    "not base64": "this is not base64!",
    "base64 with a bad length": "abcde",
    "base64 of invalid UTF-8": _b64_raw(b'{"x402Version":2,"accepts":["\xff\xfe"]}'),
    "base64 of latin-1 text": _b64_raw('{"x402Version":2,"error":"caf\xe9","accepts":[]}'.encode("latin-1")),
    "base64 of nothing": "",
    "base64 of not JSON": _b64_raw(b"<html>pay me</html>"),
    "base64 of NaN": _b64_raw(b'{"x402Version":2,"accepts":[],"n":NaN}'),
    "base64 of a JSON string": _b64_raw(b'"x402Version"'),
    "base64 of a JSON list": _b64_raw(b"[1,2,3]"),
    "deep nesting (20,000 levels)": _b64_raw(b"[" * 20_000 + b"]" * 20_000),
    "just over the 64 KiB limit": "A" * (64 * 1024 + 4),
    "a huge array": _b64_raw(json.dumps({"x402Version": 2, "accepts": [0] * 20_000}).encode()),
}


@pytest.mark.parametrize("header", MALFORMED_HEADERS.values(), ids=MALFORMED_HEADERS.keys())
def test_a_malformed_challenge_header_is_a_challenge_error(hostile: Hostile, header: str) -> None:
    hostile.script = always(challenge_reply(header))

    refused(hostile, ChallengeError)


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize("depth", [400, 3_000])
def test_a_deeply_nested_option_is_a_typed_error(hostile: Hostile, depth: int) -> None:
    option = requirement(hostile.devnet)
    option["extra"] = {**option["extra"], "deep": nested(depth)}
    hostile.script = challenge_then(challenge_reply(challenge(option)), lambda call: Reply(200))

    try:
        fetch("sync", hostile.devnet, hostile.url + "/report")
    except X402PayError:
        pass
    finally:
        assert hostile.signatures == []  # holds today: the failure comes before the payment is sent


def test_ten_thousand_accepts_are_refused_without_parsing_them(hostile: Hostile) -> None:
    option = {"scheme": "exact", "network": "eip155:31337", "amount": "1"}
    data = challenge(*[option] * 10_000)
    hostile.script = always(challenge_reply(data))

    with pytest.raises((ChallengeError, httpx.RemoteProtocolError)):
        fetch("sync", hostile.devnet, hostile.url + "/report")

    assert hostile.signatures == []


def test_ten_thousand_tiny_accepts_within_the_header_limit_are_a_challenge_error(hostile: Hostile) -> None:
    data = challenge(*[{}] * 10_000)
    hostile.script = always(challenge_reply(data))

    refused(hostile, ChallengeError, "accepts")


def test_a_v1_body_of_ten_thousand_options_is_refused(hostile: Hostile) -> None:
    option = requirement(hostile.devnet)
    option["maxAmountRequired"] = option.pop("amount")
    hostile.script = always(v1_reply(challenge(*[option] * 10_000, version=1)))

    refused(hostile, ChallengeError, "limit")


def test_an_oversize_header_beyond_the_http_limit_is_a_typed_transport_error(hostile: Hostile) -> None:
    hostile.script = always(challenge_reply("A" * 300_000))

    with pytest.raises(httpx.RemoteProtocolError):
        fetch("sync", hostile.devnet, hostile.url + "/report")

    assert hostile.signatures == []


def test_a_v1_body_that_is_not_json_goes_back_to_the_caller_unpaid(hostile: Hostile) -> None:
    hostile.script = always(Reply(402, [("content-type", "application/json")], b"\xff\xfe not json {"))

    response = fetch("sync", hostile.devnet, hostile.url + "/report")

    assert response.status_code == 402
    assert response.content == b"\xff\xfe not json {"
    assert payment_of(response) is None
    assert hostile.signatures == []


# -- duplicates and disagreements -------------------------------------------------------------------------------


def test_duplicate_challenge_headers_are_refused(hostile: Hostile) -> None:
    cheap = challenge(requirement(hostile.devnet, amount="1"))
    dear = challenge(requirement(hostile.devnet, amount=str(PRICE)))
    hostile.script = always(challenge_reply(cheap, ("payment-required", b64(dear))))

    refused(hostile, ChallengeError)


def test_a_v1_body_that_disagrees_with_the_v2_header_never_steers_the_signature(hostile: Hostile) -> None:
    honest = requirement(hostile.devnet, amount=str(PRICE))
    body_option = requirement(hostile.devnet, amount="1", payTo=STRANGER)
    body_option["maxAmountRequired"] = body_option.pop("amount")
    first = challenge_reply(challenge(honest))
    first.body = json.dumps(challenge(body_option, version=1)).encode()
    hostile.script = challenge_then(first, lambda call: Reply(200, [], b"ok"))

    fetch("sync", hostile.devnet, hostile.url + "/report")

    (paid,) = [seen for seen in hostile.seen if seen.payment is not None]
    assert paid.header("x-payment") is None  # the v2 header wins: a v2 payment, not a v1 one
    accepted = unb64(paid.header("payment-signature") or "")["accepted"]
    assert (accepted["amount"], accepted["payTo"]) == (str(PRICE), hostile.devnet.payee.address)


def test_a_payment_required_header_with_a_v1_body_and_no_x402_json_is_still_the_header(hostile: Hostile) -> None:
    hostile.script = always(challenge_reply("not base64 at all !", ("content-type", "application/json")))

    refused(hostile, ChallengeError, "not base64")


def test_a_non_x402_402_goes_back_to_the_caller(hostile: Hostile) -> None:
    hostile.script = always(Reply(402, [("content-type", "text/plain")], b"pay the invoice by cheque"))

    with client(hostile.devnet) as http:
        response = http.get(hostile.url + "/report")

    assert response.status_code == 402
    assert response.text == "pay the invoice by cheque"
    assert hostile.signatures == []


def test_a_malformed_option_beside_a_good_one_is_skipped(hostile: Hostile) -> None:
    hostile.script = challenge_then(
        challenge_reply(challenge({"amount": "-5"}, requirement(hostile.devnet))), lambda call: Reply(200)
    )

    response = fetch("sync", hostile.devnet, hostile.url + "/report")

    payment = payment_of(response)
    assert payment is not None
    assert payment.signed_amount == PRICE
    assert len(hostile.signatures) == 1


def test_a_broken_v2_header_never_falls_back_to_a_v1_body_that_asks_for_another_payee(hostile: Hostile) -> None:
    """A server cannot steer the payment by breaking the header so that a v1 body (cheaper, elsewhere) is read."""
    decoy = requirement(hostile.devnet, amount="1", payTo=STRANGER)
    decoy["maxAmountRequired"] = decoy.pop("amount")
    first = challenge_reply("%%% broken %%%")
    first.body = json.dumps(challenge(decoy, version=1)).encode()
    hostile.script = challenge_then(first, lambda call: Reply(200, [], b"ok"))

    refused(hostile, ChallengeError, "not base64")


@pytest.mark.parametrize("version", [1, 2])
def test_a_v2_header_and_a_v1_body_each_valid_alone_get_exactly_one_signature_for_the_header(
    hostile: Hostile, version: int
) -> None:
    """Whichever order the server hopes for, one payment goes out, and it is the header's (v2) option."""
    header_option = requirement(hostile.devnet)
    body_option = requirement(hostile.devnet, payTo=STRANGER)
    body_option["maxAmountRequired"] = body_option.pop("amount")
    first = challenge_reply(challenge(header_option))
    first.body = json.dumps(challenge(body_option, version=version)).encode()
    hostile.script = challenge_then(first, settle_honestly)
    balances = Balances(hostile.devnet)

    response = fetch("sync", hostile.devnet, hostile.url + "/report")

    assert response.status_code == 200
    (signature,) = hostile.signatures
    assert unb64(signature)["accepted"]["payTo"] == hostile.devnet.payee.address
    assert balances.moved() == PRICE
