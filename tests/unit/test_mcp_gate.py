"""The paid side of a tool call without a chain (`x402pay.mcp._gate`): when the tool runs, when the payment
settles, and what the caller gets, with a facilitator scripted to approve, refuse or fail."""

from __future__ import annotations

import time
from typing import Any

import pytest
from mcp_types import CallToolRequestParams, InputRequiredResult

from x402pay import SpendPolicy, Wallet
from x402pay._flow import decode_challenge, sign
from x402pay._protocol.codec import encode_header
from x402pay._protocol.headers import PAYMENT_REQUIRED
from x402pay._protocol.models import PaymentPayload, PaymentRequirements, SettleResponse
from x402pay.mcp import RESPONSE_META, PaidTools
from x402pay.mcp._wire import payment_meta
from x402pay.server import Price, SupportedResponse, VerifyResponse
from x402pay.testing import anvil_account

USDC = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
NETWORK = "eip155:8453"
PRICE = 10_000
TX = "0x" + "ab" * 32


class Scripted:
    """A facilitator that approves (or refuses) every payment and settles it (or fails to), counting settlements."""

    def __init__(self, *, valid: bool = True, settles: bool = True) -> None:
        self.valid, self.settles = valid, settles
        self.settled: list[int] = []

    async def verify(self, payload: PaymentPayload, requirements: PaymentRequirements) -> VerifyResponse:
        if not self.valid:
            return VerifyResponse.invalid("invalid_exact_evm_payload_signature", "the signature does not recover")
        return VerifyResponse(is_valid=True, payer=payload.payload["authorization"]["from"])

    async def settle(self, payload: PaymentPayload, requirements: PaymentRequirements) -> SettleResponse:
        self.settled.append(requirements.amount)
        if not self.settles:
            return SettleResponse(success=False, network=NETWORK, error_reason="insufficient_funds")
        return SettleResponse(success=True, transaction=TX, network=NETWORK, payer=anvil_account(3).address)

    async def supported(self) -> SupportedResponse:
        return SupportedResponse.model_validate({"kinds": [{"x402Version": 2, "scheme": "exact", "network": NETWORK}]})


class Tool:
    """The tool behind the gate: counts its runs, answers `result`."""

    def __init__(self, result: dict[str, Any] | None = None) -> None:
        self.runs = 0
        self.result = result or {"content": [{"type": "text", "text": "sunny"}], "isError": False}

    async def __call__(self) -> dict[str, Any]:
        self.runs += 1
        return self.result


def paid_tools(facilitator: Scripted) -> PaidTools:
    return PaidTools(facilitator=facilitator, network=NETWORK, pay_to=anvil_account(2).address,
                     tools={"weather": Price.exact(PRICE, asset=USDC)})  # fmt: skip


async def payment_for(tools: PaidTools) -> dict[str, Any]:
    """A signed payment for the challenge the gate answers an unpaid call with: the request's ``_meta``."""
    unpaid = await tools.gate.call("weather", None, Tool())
    challenge = decode_challenge({PAYMENT_REQUIRED: encode_header(unpaid["structuredContent"])}, None)
    assert challenge is not None
    _, header = sign(challenge, challenge.requirements[0], wallet=Wallet(anvil_account(3)),
                     policy=SpendPolicy(max_per_request=PRICE), origin="memory://w", now=int(time.time()))  # fmt: skip
    return payment_meta(header)


async def test_an_unpaid_call_gets_the_challenge_and_the_tool_does_not_run() -> None:
    tool = Tool()
    answer = await paid_tools(Scripted()).gate.call("weather", None, tool)
    assert answer["isError"]
    assert answer["structuredContent"]["accepts"][0]["amount"] == str(PRICE)
    assert tool.runs == 0


async def test_a_free_tool_runs_without_the_middleware() -> None:
    tool = Tool()
    assert await paid_tools(Scripted()).gate.call("ping", None, tool) == tool.result
    assert tool.runs == 1


async def test_a_verified_payment_runs_the_tool_and_settles_before_the_result_leaves() -> None:
    facilitator, tool = Scripted(), Tool()
    tools = paid_tools(facilitator)
    answer = await tools.gate.call("weather", await payment_for(tools), tool)
    assert answer["content"] == tool.result["content"]
    assert answer["_meta"][RESPONSE_META]["transaction"] == TX
    assert (tool.runs, facilitator.settled) == (1, [PRICE])


async def test_a_payment_presented_twice_runs_the_tool_once() -> None:
    facilitator, tool = Scripted(), Tool()
    tools = paid_tools(facilitator)
    meta = await payment_for(tools)
    await tools.gate.call("weather", meta, tool)
    again = await tools.gate.call("weather", meta, tool)
    assert again["structuredContent"]["error"] == "invalid_exact_evm_nonce_already_used"
    assert (tool.runs, facilitator.settled) == (1, [PRICE])


async def test_a_refused_payment_does_not_run_the_tool() -> None:
    tool = Tool()
    tools = paid_tools(Scripted(valid=False))
    answer = await tools.gate.call("weather", await payment_for(tools), tool)
    assert answer["structuredContent"]["error"] == "invalid_exact_evm_payload_signature"
    assert answer["structuredContent"]["errorMessage"] == "the signature does not recover"
    assert tool.runs == 0


async def test_a_tool_error_charges_nothing_and_is_passed_through() -> None:
    facilitator = Scripted()
    tool = Tool({"content": [{"type": "text", "text": "broke"}], "isError": True})
    tools = paid_tools(facilitator)
    answer = await tools.gate.call("weather", await payment_for(tools), tool)
    assert answer == tool.result
    assert facilitator.settled == []


async def test_a_failed_settlement_withholds_the_result() -> None:
    tool = Tool()
    tools = paid_tools(Scripted(settles=False))
    answer = await tools.gate.call("weather", await payment_for(tools), tool)
    assert tool.runs == 1
    assert answer["isError"]
    assert "sunny" not in str(answer)
    assert answer["_meta"][RESPONSE_META] == answer["structuredContent"][RESPONSE_META]
    assert answer["structuredContent"]["error"] == "insufficient_funds"


async def test_a_paid_tool_that_asks_for_input_is_not_charged() -> None:
    facilitator = Scripted()
    tools = paid_tools(facilitator)
    params = CallToolRequestParams(name="weather", arguments={}, _meta=await payment_for(tools))

    async def asks_for_input(ctx: Any) -> InputRequiredResult:
        return InputRequiredResult.model_validate({"requestState": "opaque"})

    with pytest.raises(TypeError, match="InputRequiredResult"):
        await tools.extension().intercept_tool_call(params, None, asks_for_input)
    assert facilitator.settled == []


@pytest.mark.parametrize("name", ["", "a b", "x" * 129, "tool/{name}"])
def test_a_tool_name_mcp_would_refuse_is_refused_here(name: str) -> None:
    with pytest.raises(ValueError, match="not an MCP tool name"):
        PaidTools(facilitator=Scripted(), network=NETWORK, pay_to=anvil_account(2).address,
                  tools={name: Price.exact(PRICE, asset=USDC)})  # fmt: skip
