"""Pre-payment's pure steps against an in-memory peer that recovers every signature (the same flows run on anvil
in tests/integration/test_prepay_on_chain.py): expiry, re-sending after a lost answer, the fallback's bookkeeping,
the bar."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data

from x402pay import AlreadyPaid, OriginUntrusted, PaymentRejected, SpendCapExceeded, SpendPolicy, Wallet, payment_of
from x402pay._books import PREPAY_SUFFIX as KEY_SUFFIX
from x402pay._flow import decode_challenge
from x402pay._prepay import BAR_SECONDS, MAX_ROUTES, Prepayments, asks_for_signed
from x402pay._schemes.eip712 import transfer_with_authorization
from x402pay._transport import AsyncPaymentTransport, PaymentTransport
from x402pay._trust import TrustStore
from x402pay.ledger import EntryState, Ledger

WALLET = Wallet.from_key("0x" + "44" * 32)
USDC = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
PAYEE = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
URL = "https://paid.example/data"


def requirement(amount: int) -> dict[str, Any]:
    return {
        "scheme": "exact", "network": "eip155:8453", "amount": str(amount), "asset": USDC, "payTo": PAYEE,
        "maxTimeoutSeconds": 60, "extra": {"name": "USD Coin", "version": "2"},
    }  # fmt: skip


def b64(data: Any) -> str:
    return base64.b64encode(json.dumps(data).encode()).decode()


class Peer:
    """A v2 server at one price that accepts a payment only when it recovers to the payer and matches the price."""

    def __init__(self, price: int = 10_000) -> None:
        self.price = price
        self.refuse_all = False
        self.fail_next_send = False
        self.seen: list[str | None] = []  # the payment header of each request, None when unpaid

    def challenge(self) -> httpx.Response:
        body = {"x402Version": 2, "error": "pay", "resource": {"url": URL}, "accepts": [requirement(self.price)]}
        return httpx.Response(402, headers={"PAYMENT-REQUIRED": b64(body)})

    def __call__(self, request: httpx.Request) -> httpx.Response:
        header = request.headers.get("PAYMENT-SIGNATURE")
        self.seen.append(header)
        if self.fail_next_send:
            self.fail_next_send = False
            raise httpx.ReadTimeout("the answer was lost", request=request)
        if header is None or self.refuse_all or not self.accepts(json.loads(base64.b64decode(header))):
            return self.challenge()
        settled = {"success": True, "transaction": "0x" + "cd" * 32, "network": "eip155:8453"}
        return httpx.Response(200, headers={"PAYMENT-RESPONSE": b64(settled)}, json={"ok": True})

    def accepts(self, payment: dict[str, Any]) -> bool:
        authorization = payment["payload"]["authorization"]
        message = {**authorization, **{k: int(authorization[k]) for k in ("value", "validAfter", "validBefore")}}
        typed = transfer_with_authorization(
            token_name="USD Coin", token_version="2", chain_id=8453, token=USDC, authorization=message
        )
        signer = Account.recover_message(
            encode_typed_data(full_message=typed), signature=payment["payload"]["signature"]
        )
        return signer == authorization["from"] and message["value"] == self.price


def client(peer: Peer, **options: Any) -> httpx.Client:
    policy = SpendPolicy(max_per_request=options.pop("cap", 50_000))
    transport = PaymentTransport(wallet=WALLET, policy=policy, inner=httpx.MockTransport(peer), prepay=True, **options)
    return httpx.Client(transport=transport)


def paid_flags(peer: Peer) -> list[bool]:
    return [header is not None for header in peer.seen]


def test_pre_payment_is_off_unless_asked_for() -> None:
    peer = Peer()
    transport = PaymentTransport(
        wallet=WALLET, policy=SpendPolicy(max_per_request=50_000), inner=httpx.MockTransport(peer)
    )
    with httpx.Client(transport=transport) as http:
        http.get(URL)
        http.get(URL)
    assert paid_flags(peer) == [False, True, False, True]


def test_the_query_does_not_matter_but_the_method_does() -> None:
    peer = Peer()
    with client(peer) as http:
        http.get(URL + "?a=1")
        http.get(URL + "?b=2")
        http.post(URL)
    assert paid_flags(peer) == [False, True, True, False, True]


def test_a_stale_challenge_is_not_used() -> None:
    peer = Peer()
    with client(peer, prepay_ttl=0.0) as http:
        http.get(URL)
        http.get(URL)
    assert paid_flags(peer) == [False, True, False, True]


def test_a_lost_answer_is_re_sent_with_the_same_pre_payment() -> None:
    peer = Peer()
    with client(peer) as http:
        http.get(URL)
        peer.fail_next_send = True
        with pytest.raises(httpx.ReadTimeout):
            http.get(URL, headers={"Idempotency-Key": "order-7"})
        response = http.get(URL, headers={"Idempotency-Key": "order-7"})
    assert response.status_code == 200
    assert peer.seen[2] is not None
    assert peer.seen[3] == peer.seen[2]  # re-sent byte for byte, not re-signed


def counted_choices(monkeypatch: pytest.MonkeyPatch) -> list[int | None]:
    """The ceiling of every choice the policy makes from now on."""
    ceilings: list[int | None] = []
    choose = SpendPolicy.choose

    def counting(policy: SpendPolicy, *args: Any, **kwargs: Any) -> Any:
        ceilings.append(args[3] if len(args) > 3 else kwargs.get("ceiling"))
        return choose(policy, *args, **kwargs)

    monkeypatch.setattr(SpendPolicy, "choose", counting)
    return ceilings


def test_the_choice_for_a_remembered_challenge_is_kept_per_ceiling(monkeypatch: pytest.MonkeyPatch) -> None:
    ceilings = counted_choices(monkeypatch)
    peer, trust = Peer(), TrustStore()
    with client(peer, trust=trust) as http:
        for _ in range(3):
            http.get(URL)
        http.get(URL, headers={"x-x402-max-amount-wei": "20000"})
        http.get(URL, headers={"x-x402-max-amount-wei": "20000"})
        trust.mark("https://paid.example", "a test's lie")
        with pytest.raises(OriginUntrusted):  # the trust marks are read for every request, kept choice or not
            http.get(URL)
    assert paid_flags(peer) == [False, True, True, True, True, True, False]  # the last: asked unpaid, never paid
    assert ceilings == [50_000, 50_000, 20_000]  # the 402's challenge, then the remembered one once per ceiling


def test_the_choice_is_made_anew_when_the_ledger_has_a_say(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    ceilings = counted_choices(monkeypatch)
    peer, ledger = Peer(), Ledger.sqlite(tmp_path / "ledger.db")
    with client(peer, ledger=ledger) as http:
        for _ in range(3):
            http.get(URL)
    ledger.close()
    assert paid_flags(peer) == [False, True, True, True]
    assert ceilings == [50_000] * 3  # budgets may change between requests: the choice is not kept


def test_a_pre_payment_above_the_cap_is_never_signed() -> None:
    peer = Peer()
    with client(peer, cap=10_000) as http:
        http.get(URL)
        peer.price = 20_000  # the remembered challenge still says 10,000: the server's 402 tells the truth
        with pytest.raises(SpendCapExceeded):
            http.get(URL)
    assert paid_flags(peer) == [False, True, True]  # the pre-payment (10,000) only; 20,000 is over the cap
    assert all(json.loads(base64.b64decode(h))["accepted"]["amount"] == "10000" for h in peer.seen if h)


def test_a_refused_pre_payment_is_held_and_the_new_price_booked_under_the_key(tmp_path: Any) -> None:
    ledger = Ledger.sqlite(tmp_path / "ledger.db")
    peer = Peer()
    with client(peer, ledger=ledger) as http:
        http.get(URL)
        peer.price = 12_000
        response = http.get(URL, headers={"Idempotency-Key": "order-8"})
        again = http.get(URL, headers={"Idempotency-Key": "order-8"})  # the caller retries the same request

    prepaid, reactive = ledger.lookup("order-8" + KEY_SUFFIX), ledger.lookup("order-8")
    assert prepaid is not None
    assert reactive is not None
    assert prepaid.state is EntryState.UNKNOWN  # refused, but it may still settle until it expires: still held
    assert (prepaid.amount, reactive.amount, reactive.state) == (
        10_000,
        12_000,
        EntryState.CLAIMED,
    )  # no chain here: a claim
    payment = payment_of(response)
    assert payment is not None
    assert payment.settled_amount == 12_000
    assert len(peer.seen) == 5  # unpaid, paid; the refused pre-payment, the reactive payment; the retry
    assert peer.seen[-1] == peer.seen[-2]  # the retry re-sent the reactive payment; nothing new was signed
    assert again.status_code == 200


def test_a_402_without_a_challenge_after_a_pre_payment_stands() -> None:
    peer = Peer()
    with client(peer) as http:
        http.get(URL)
        peer.challenge = lambda: httpx.Response(402, text="no")  # type: ignore[method-assign]
        peer.refuse_all = True
        with pytest.raises(PaymentRejected):
            http.get(URL)
    assert paid_flags(peer) == [False, True, True]


def test_a_request_paid_at_one_origin_is_not_pre_paid_at_the_next_one() -> None:
    peer = Peer()  # serves URL (https://paid.example), whose route gets pre-payable below
    first_hop: list[str | None] = []

    def two_origins(request: httpx.Request) -> httpx.Response:
        if request.url.host != "first.example":
            return peer(request)
        first_hop.append(request.headers.get("PAYMENT-SIGNATURE"))
        if first_hop[-1] is None:
            return peer.challenge()
        return httpx.Response(307, headers={"location": URL})  # paid, then sent elsewhere

    policy = SpendPolicy(max_per_request=50_000)
    paying = PaymentTransport(wallet=WALLET, policy=policy, inner=httpx.MockTransport(two_origins), prepay=True)
    with httpx.Client(transport=paying, follow_redirects=True) as http:
        http.get(URL)  # the route of URL is now pre-payable
        seen_before = len(peer.seen)
        with pytest.raises(AlreadyPaid, match=r"already paid at https://first\.example"):
            http.get("https://first.example/start")

    assert first_hop[1] is not None  # paid once, at the first origin
    assert peer.seen[seen_before:] == []  # nothing, not even a pre-payment, went to the second


async def test_the_async_transport_falls_back_the_same_way() -> None:
    peer = Peer()
    policy = SpendPolicy(max_per_request=50_000)
    transport = AsyncPaymentTransport(wallet=WALLET, policy=policy, inner=httpx.MockTransport(peer), prepay=True)
    async with httpx.AsyncClient(transport=transport) as http:
        await http.get(URL)
        await http.get(URL)
        peer.price = 12_000
        changed = await http.get(URL)
        await http.get(URL)
    assert paid_flags(peer) == [False, True, True, True, True, False, True]
    payment = payment_of(changed)
    assert payment is not None
    assert (payment.prepaid, payment.settled_amount) == (False, 12_000)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def challenge(amount: int) -> Any:
    body = {"x402Version": 2, "resource": {"url": URL}, "accepts": [requirement(amount)]}
    return decode_challenge({"PAYMENT-REQUIRED": b64(body)}, None)


def test_prepayments_expire_are_barred_and_stay_bounded() -> None:
    clock = Clock()
    routes = Prepayments(ttl=60, clock=clock)
    route = ("GET", "https://paid.example", "/data")
    routes.remember(route, challenge(10_000))
    assert routes.challenge_for(route) is not None
    clock.now += 61
    assert routes.challenge_for(route) is None

    routes.remember(route, challenge(10_000))
    routes.refused("HTTPS://PAID.example")
    routes.remember(route, challenge(10_000))
    assert routes.challenge_for(route) is None
    clock.now += BAR_SECONDS + 1
    routes.remember(route, challenge(10_000))
    assert routes.challenge_for(route) is not None

    for n in range(MAX_ROUTES + 10):
        routes.remember(("GET", "https://paid.example", f"/{n}"), challenge(1))
    assert routes.challenge_for(route) is None  # the oldest were forgotten
    assert routes.challenge_for(("GET", "https://paid.example", f"/{MAX_ROUTES + 9}")) is not None


def test_asks_for_signed_compares_the_whole_requirement() -> None:
    old = challenge(10_000)
    assert old is not None
    signed = old.requirements[0]
    assert asks_for_signed(old, signed)
    new = challenge(10_001)
    assert new is not None
    assert not asks_for_signed(new, signed)


def test_the_books_keep_a_price_when_it_is_new_changed_or_getting_old() -> None:
    clock = Clock()
    routes = Prepayments(ttl=60, clock=clock)
    route = ("GET", "https://paid.example", "/data")
    assert routes.remember(route, challenge(10_000))  # new
    assert not routes.remember(route, challenge(10_000))  # the same price, just kept
    clock.now += 16
    assert routes.remember(route, challenge(10_000))  # kept over a quarter of the ttl ago
    assert routes.remember(route, challenge(12_000))  # changed
    routes.refused("https://paid.example")
    assert not routes.remember(route, challenge(13_000))  # from an origin that refused a pre-payment: never


def test_routes_from_the_books_are_read_once_and_only_fresh_ones_are_used() -> None:
    clock = Clock()
    routes = Prepayments(ttl=60, clock=clock)
    here, fresh, stale = (("GET", "https://paid.example", path) for path in ("/here", "/fresh", "/stale"))
    routes.remember(here, challenge(1))
    assert routes.first_to_load()
    assert not routes.first_to_load()
    routes.load(here, challenge(2), age=5)  # what this transport saw itself wins
    routes.load(fresh, challenge(3), age=50)
    routes.load(stale, challenge(4), age=61)
    assert [found.requirements[0].amount for found in map(routes.challenge_for, (here, fresh))] == [1, 3]
    assert routes.challenge_for(stale) is None
    clock.now += 11
    assert routes.challenge_for(fresh) is None  # its age counts from when the books saw it


class FailingRoutes(Ledger):
    """A ledger whose route memory is broken: pre-payment must go on from memory."""

    def routes(self, *, max_age: float) -> Any:
        raise OSError("disk gone")

    def remember_route(self, *args: Any, **kwargs: Any) -> None:
        raise OSError("disk gone")


def test_a_ledger_that_cannot_remember_routes_does_not_stop_pre_payment() -> None:
    peer = Peer()
    ledger = FailingRoutes.sqlite(":memory:")
    with client(peer, ledger=ledger) as http:
        first, second = http.get(URL), http.get(URL)
    assert (first.status_code, second.status_code) == (200, 200)
    assert paid_flags(peer) == [False, True, True]


def test_a_transport_with_a_ledger_pre_pays_what_another_one_learned() -> None:
    peer = Peer()
    ledger = Ledger.sqlite(":memory:")
    with client(peer, ledger=ledger) as http:
        http.get(URL)
    with client(peer, ledger=ledger) as http:
        second = http.get(URL)
    assert payment_of(second).prepaid  # type: ignore[union-attr]
    assert paid_flags(peer) == [False, True, True]
    with client(peer, ledger=ledger, prepay_ttl=0.0) as http:  # a transport that never pre-pays ignores them
        http.get(URL)
    assert paid_flags(peer) == [False, True, True, False, True]
