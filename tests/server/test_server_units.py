"""Pure pieces of the server: the SSE tap, route matching and prices, receipts, the gas-sponsoring extension.

No chain, no sockets.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from server_support import decode

from x402pay._protocol.models import PaymentPayload, PaymentRequirements, SettleResponse
from x402pay.server import LineItem, PaidRequest, Price
from x402pay.server._evm import Refusal
from x402pay.server._mirror import Mirrors
from x402pay.server._pricing import client_ceiling, compile_routes, match_route
from x402pay.server._receipts import make_compose_receipt, x_receipt_header
from x402pay.server._responses import DoneHoldback, _Start
from x402pay.server._sponsoring import offer, read_permit

USDC = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
PAY_TO = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"


def run_tap(chunks: list[bytes]) -> list[bytes]:
    tap = DoneHoldback()
    out = [tap.feed(chunk) for chunk in chunks]
    return [*out, tap.finish(b"event: compose.receipt\ndata: {}\n\n")]


def test_the_tap_forwards_whole_frames_as_they_complete() -> None:
    out = run_tap([b"data: 1\n", b"\ndata: 2\n\nda", b"ta: 3\n\n", b"data: [DONE]\n\n"])
    assert out == [
        b"",
        b"data: 1\n\ndata: 2\n\n",
        b"data: 3\n\n",
        b"",
        b"event: compose.receipt\ndata: {}\n\ndata: [DONE]\n\n",
    ]


def test_the_tap_holds_done_split_across_chunks_and_what_follows() -> None:
    out = run_tap([b"data: 1\r\n\r\ndata: [DO", b"NE]\r\n\r\n", b": trailing comment\n\n"])
    assert out[0] == b"data: 1\r\n\r\n"
    assert out[-1] == b"event: compose.receipt\ndata: {}\n\ndata: [DONE]\r\n\r\n: trailing comment\n\n"


def test_without_done_the_receipt_goes_last_after_an_unterminated_frame() -> None:
    out = run_tap([b"data: 1\n\ndata: 2"])
    assert out == [b"data: 1\n\n", b"data: 2\n\nevent: compose.receipt\ndata: {}\n\n"]


def test_a_data_line_that_merely_mentions_done_is_not_the_end() -> None:
    assert run_tap([b'data: {"text":"[DONE]"}\n\n'])[0] == b'data: {"text":"[DONE]"}\n\n'


frames = st.lists(
    st.tuples(
        st.sampled_from([b"data: 1", b"data: [DONE]", b"data:[DONE]", b": c", b"", b"\n", b"\r", b"data: a\nb"]),
        st.sampled_from([b"\n\n", b"\r\n\r\n", b"\r\r", b"\n", b""]),
    ).map(b"".join),
    max_size=6,
)


@settings(max_examples=300, database=None)
@given(frames=frames, cuts=st.lists(st.integers(0, 60), max_size=6), by_frame=st.booleans())
def test_the_tap_does_not_depend_on_how_the_stream_is_chunked(
    frames: list[bytes], cuts: list[int], by_frame: bool
) -> None:
    stream = b"".join(frames)
    if by_frame:  # one frame per chunk, as most servers write
        chunks = frames
    else:
        points = sorted({min(cut, len(stream)) for cut in cuts})
        chunks = [stream[start:end] for start, end in zip([0, *points], [*points, len(stream)], strict=True)]
    assert b"".join(run_tap(chunks)) == b"".join(run_tap([stream]))


def test_a_stream_goes_out_without_length_marked_private_and_without_overrides() -> None:
    start = _Start(
        [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"Content-Length", b"12"),
            (b"settlement-overrides", b'{"amount":"5"}'),
            (b"cache-control", b"no-cache"),
            (b"Settlement-Overrides", b'{"amount":"6"}'),
            (b"x-app", b"1"),
        ]
    )
    assert start.streams
    assert start.overrides == '{"amount":"5"}'
    assert start.headers == [
        (b"content-type", b"text/event-stream; charset=utf-8"),
        (b"Content-Length", b"12"),
        (b"cache-control", b"no-cache"),
        (b"x-app", b"1"),
    ]
    assert start.streamed() == [
        (b"cache-control", b"no-cache, private"),
        (b"content-type", b"text/event-stream; charset=utf-8"),
        (b"x-app", b"1"),
    ]


def test_a_private_stream_keeps_its_cache_control_and_the_first_content_type_decides() -> None:
    private = _Start([(b"content-type", b"text/event-stream"), (b"cache-control", b"no-store, Private")])
    assert private.streamed() == [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-store, Private")]
    assert not _Start([(b"content-type", b"application/json"), (b"content-type", b"text/event-stream")]).streams
    assert _Start([]).streamed() == [(b"cache-control", b"private")]


def test_routes_match_method_and_path_templates() -> None:
    price = Price.exact(1, asset=USDC)
    routes = compile_routes({"GET /a/{id}": price, "* /b": [price, Price.upto(5, asset=USDC)]})
    assert match_route(routes, "GET", "/a/42") is routes[0]
    assert match_route(routes, "get", "/a/42") is routes[0]
    assert match_route(routes, "HEAD", "/a/42") is routes[0]
    assert match_route(routes, "POST", "/a/42") is None
    assert match_route(routes, "GET", "/a/42/more") is None
    assert match_route(routes, "GET", "/a/") is None
    assert match_route(routes, "DELETE", "/b") is routes[1]
    assert len(routes[1].prices) == 2


@pytest.mark.parametrize("key", ["/no-method", "GET no-slash", ""])
def test_a_malformed_route_key_is_refused(key: str) -> None:
    with pytest.raises(ValueError, match="METHOD /path"):
        compile_routes({key: Price.exact(1, asset=USDC)})


@pytest.mark.parametrize("amount", [0, -1, True, 1.5, 2**256])
def test_a_price_is_a_positive_int(amount: object) -> None:
    with pytest.raises(ValueError, match="positive int"):
        Price.exact(amount, asset=USDC)  # type: ignore[arg-type]


def test_eip3009_on_an_unknown_token_needs_its_domain() -> None:
    unknown = "0x" + "11" * 20
    with pytest.raises(ValueError, match="token_name"):
        Price.exact(1, asset=unknown).requirement(
            network="eip155:1", chain_id=1, pay_to=PAY_TO, ceiling=None, facilitator=None
        )
    requirement = Price.exact(1, asset=unknown, token_name="T", token_version="7").requirement(
        network="eip155:1", chain_id=1, pay_to=PAY_TO, ceiling=None, facilitator=None
    )
    assert requirement.extra == {"name": "T", "version": "7"}


@pytest.mark.parametrize(
    ("value", "expected"), [("1000", 1000), ("0", None), ("-1", None), ("1e3", None), ("٣", None), (None, None)]
)
def test_client_ceiling(value: str | None, expected: int | None) -> None:
    assert client_ceiling(value) == expected


def paid(scheme: str = "upto") -> PaidRequest:
    requirement = PaymentRequirements(
        scheme=scheme, network="eip155:1", amount=100, asset=USDC, pay_to=PAY_TO, max_timeout_seconds=60
    )
    payload = PaymentPayload(x402_version=2, accepted=requirement.to_wire(), payload={})
    return PaidRequest(requirement=requirement, payload=payload, payer=PAY_TO)


def test_charge_is_bounded_by_the_signed_maximum() -> None:
    request = paid()
    assert request.amount_due == 100
    request.charge(0)
    assert request.amount_due == 0
    for bad in (101, -1, True):
        with pytest.raises(ValueError, match="between 0 and"):
            request.charge(bad)
    with pytest.raises(ValueError, match="only an upto"):
        paid("exact").charge(1)


def test_receipts_in_stream_and_header_form() -> None:
    request = paid()
    request.charge(42, line_items=[LineItem("output_tokens", "tokens", 21, 0.000002, 42)], subject="m")
    settlement = SettleResponse(success=True, transaction="0xabc", network="eip155:1", payer=PAY_TO, amount=42)
    receipt = make_compose_receipt(request, settlement, settled_at_ms=1_700_000_000_000)
    assert receipt == {
        "finalAmountWei": "42",
        "network": "eip155:1",
        "settledAt": 1_700_000_000_000,
        "settlementStatus": "settled",
        "userAddress": PAY_TO,
        "txHash": "0xabc",
        "meterSubject": "m",
        "lineItems": [
            {"key": "output_tokens", "unit": "tokens", "quantity": 21, "unitPriceUsd": 2e-06, "amountWei": "42"}
        ],
    }
    header = x_receipt_header(receipt)
    assert "=" not in header
    assert "+" not in header
    assert "/" not in header
    decoded = decode(header)
    assert decoded.pop("subject") == "m"
    assert decoded == {key: value for key, value in receipt.items() if key != "meterSubject"}


# -- eip2612GasSponsoring -------------------------------------------------------------------------------------

SIGNED_INFO = {
    "from": PAY_TO.lower(),
    "asset": USDC,
    "spender": "0x000000000022D473030F116dDEE9F6B43aC78BA3",
    "amount": "50000",
    "nonce": "3",
    "deadline": "1900000000",
    "signature": "0x" + "11" * 32 + "22" * 32 + "1b",
    "version": "1",
}


def test_a_signed_permit_is_read_into_the_proxies_struct() -> None:
    permit = read_permit({"eip2612GasSponsoring": {**offer(), "info": SIGNED_INFO}})
    assert permit is not None
    assert (permit.owner, permit.value, permit.nonce) == (PAY_TO, 50_000, 3)
    assert permit.contract_tuple == (50_000, 1_900_000_000, b"\x11" * 32, b"\x22" * 32, 27)


@pytest.mark.parametrize("extensions", [None, {}, {"bazaar": {}}, {"eip2612GasSponsoring": offer()}])
def test_no_signed_permit_reads_as_none(extensions: dict[str, object] | None) -> None:
    assert read_permit(extensions) is None


@pytest.mark.parametrize("change", [{"from": "0x12"}, {"deadline": "-1"}, {"signature": "0x" + "11" * 64}, {}])
def test_a_malformed_permit_is_refused(change: dict[str, str]) -> None:
    info = {**SIGNED_INFO, **change} if change else {key: v for key, v in SIGNED_INFO.items() if key != "nonce"}
    with pytest.raises(Refusal) as caught:
        read_permit({"eip2612GasSponsoring": {"info": info}})
    assert caught.value.reason == "invalid_eip2612_extension_format"


# -- the mirror of payers' funds (LocalFacilitator's verify_ttl) ----------------------------------------------

PAYER = (USDC.lower(), PAY_TO.lower())
FAR = 2**40  # a deadline that has not passed


def mirrored(balance: int, allowance: int | None = None, ttl: float = 30.0) -> Mirrors:
    mirrors = Mirrors(ttl)
    mirrors.read(PAYER, balance, allowance, began=time.monotonic(), chain_time=int(time.time()))
    return mirrors


def test_the_mirror_covers_what_was_read_less_what_was_taken_since() -> None:
    mirrors = mirrored(25)
    assert mirrors.check(PAYER, "a", 10, permit2=False) == "covered"
    mirrors.hold(PAYER, "a", 10, FAR)
    assert mirrors.check(PAYER, "a", 10, permit2=False) == "covered"  # the same payment again: not counted twice
    mirrors.hold(PAYER, "b", 10, FAR)
    assert mirrors.check(PAYER, "c", 10, permit2=False) == "unknown"  # 5 left: the chain decides
    mirrors.release(PAYER, "b")  # settled for 0: nothing moved
    assert mirrors.check(PAYER, "c", 10, permit2=False) == "covered"
    assert mirrors.check(PAYER, "c", 10, permit2=True) == "unknown"  # no allowance was read


def test_a_sent_settlement_is_pending_and_a_mined_one_is_refused_as_settled() -> None:
    mirrors = mirrored(100)
    mirrors.hold(PAYER, "a", 50, FAR)
    mirrors.sent(PAYER, "a", 7, FAR)
    assert mirrors.check(PAYER, "a", 50, permit2=False) == "pending"
    assert mirrors.check(PAYER, "b", 93, permit2=False) == "covered"  # the charge is taken, not the maximum
    mirrors.settled(PAYER, "a")
    assert mirrors.check(PAYER, "a", 50, permit2=False) == "settled"
    mirrors.read(PAYER, 93, None, began=time.monotonic(), chain_time=int(time.time()))  # the read includes it
    assert mirrors.check(PAYER, "b", 93, permit2=False) == "covered"
    assert mirrors.check(PAYER, "a", 50, permit2=False) == "settled"  # still refused while it lasts


def test_a_failed_settlement_drops_the_mirror_and_a_stale_one_is_not_used() -> None:
    mirrors = mirrored(100)
    mirrors.hold(PAYER, "a", 10, FAR)
    mirrors.failed(PAYER, "a")
    assert mirrors.check(PAYER, "b", 1, permit2=False) == "unknown"
    stale = mirrored(100, ttl=0.01)
    time.sleep(0.02)
    assert stale.check(PAYER, "b", 1, permit2=False) == "unknown"
    off = mirrored(100, ttl=0)
    assert (off.check(PAYER, "b", 1, permit2=False), len(off)) == ("unknown", 0)
    with pytest.raises(ValueError, match="verify_ttl"):
        Mirrors(-1)
