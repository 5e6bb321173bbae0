"""The latency benchmark's verdicts: batch latencies come from rates (requests per second), so a ratio to unpaid must
be read the right way round; the goal is judged on requests that took turns with unpaid ones, and a pre-payment
slower than the goal must say so."""

from __future__ import annotations

from bench.bench_latency import FIRST_CALL, PRESIGN_ASYNC, RESTARTED, AtRoundTrip, rows
from bench.bench_transport import FLOOR_ASYNC, OFFICIAL, PREPAY_ASYNC, X402PAY_ASYNC, Cost
from bench.latency_split import Split, ratio_interval


def figures(prepaid_seconds: float) -> AtRoundTrip:
    """Three rounds (and three turns) at a 100 ms round trip: unpaid 100 ms, reactive and the SDK 200 ms, first
    calls 200 ms (110 ms after a restart with a ledger)."""
    seconds = {FLOOR_ASYNC: 0.1, X402PAY_ASYNC: 0.2, PREPAY_ASYNC: prepaid_seconds, PRESIGN_ASYNC: 0.1005,
               OFFICIAL: 0.2}  # fmt: skip
    rates = {name: [1 / each] * 3 for name, each in seconds.items()}
    ttfb = {name: [seconds[name]] * 3 for name in (FLOOR_ASYNC, X402PAY_ASYNC, PREPAY_ASYNC, PRESIGN_ASYNC)}
    costs = {name: Cost(client=[0.001] * 3, server=[0.0001] * 3) for name in seconds}
    return AtRoundTrip(
        sequential=rates,
        costs=costs,
        concurrent=rates,
        first_call=[0.2] * 3,
        restarted=[0.11] * 3,
        ttfb=ttfb,
        split={name: Split(total=[seconds[name]] * 3) for name in (FLOOR_ASYNC, PREPAY_ASYNC, PRESIGN_ASYNC)},
    )


def test_a_pre_payment_within_the_goal_is_met() -> None:
    requests, streams, verdicts = rows(100, figures(prepaid_seconds=0.101))
    assert verdicts == [
        "  - 100 ms round trip, `prepay=True`: pre-paid latency 1.010x (95% interval 1.010-1.010x), met (+1.00 ms"
        " per request; client CPU +0 µs per request); pre-paid time to first byte of a stream 1.010x (95% interval"
        " 1.010-1.010x), met.",
        "  - 100 ms round trip, `prepay=True, presign=True`: pre-paid latency 1.005x (95% interval 1.005-1.005x),"
        " met (+0.50 ms per request; client CPU +0 µs per request); pre-paid time to first byte of a stream 1.005x"
        " (95% interval 1.005-1.005x), met.",
    ]
    assert "| 100 | x402pay AsyncPaymentTransport, paid route | 200.0 | 2.000x | 1,000 | 100 | 5 | 0.50x |" in requests
    assert f"| 100 | {FIRST_CALL} | 200.0 | 2.000x | - | - | - | - |" in requests
    assert f"| 100 | {RESTARTED} | 110.0 | 1.100x | - | - | - | - |" in requests
    assert "| 100 | x402pay AsyncPaymentTransport(prepay=True), paid route | 101.0 | 1.010x |" in streams
    assert any(row.startswith("| 100 | x402pay AsyncPaymentTransport(prepay=True), paid route | 101.0 | 1.010x |")
               for row in requests)  # fmt: skip


def test_a_slower_pre_payment_is_not_met() -> None:
    _, _, verdicts = rows(20, figures(prepaid_seconds=0.105))
    assert "pre-paid latency 1.050x (95% interval 1.050-1.050x), NOT met" in verdicts[0]
    assert "first byte of a stream 1.050x (95% interval 1.050-1.050x), NOT met" in verdicts[0]
    assert "`prepay=True, presign=True`: pre-paid latency 1.005x (95% interval 1.005-1.005x), met" in verdicts[1]


def test_a_ratio_whose_interval_straddles_the_goal_says_so() -> None:
    floor = [0.1] * 9
    mine = [0.1 * ratio for ratio in (1.00, 1.01, 1.015, 1.018, 1.019, 1.021, 1.022, 1.03, 1.04)]
    ratio, low, high = ratio_interval(mine, floor)
    assert round(ratio, 3) == 1.019
    assert low < 1.02 < high
    result = figures(prepaid_seconds=0.1)
    result.split[PREPAY_ASYNC] = Split(total=mine)
    result.split[FLOOR_ASYNC] = Split(total=floor)
    result.split[PRESIGN_ASYNC] = Split(total=floor)
    result.ttfb = {name: [0.1] * 9 for name in result.ttfb}
    assert "1.019x (95% interval" in rows(20, result)[2][0]
    assert "), met, within the noise of the goal (" in rows(20, result)[2][0]
