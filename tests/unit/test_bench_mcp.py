"""The MCP benchmark's contenders do what their names say, once each (no timing here)."""

from __future__ import annotations

from bench.bench_mcp import FLOOR, FREE, PAID, PRESIGNED, Connected, contenders, weather


def test_every_contender_makes_its_calls() -> None:
    connected = Connected(weather())
    try:
        batches = contenders(connected, calls=2, rounds=0)
        assert {name: batch() for name, batch in batches.items()} == {FLOOR: 2, FREE: 2, PAID: 2, PRESIGNED: 2}
    finally:
        connected.close()
