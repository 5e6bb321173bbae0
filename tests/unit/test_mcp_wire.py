"""x402 on MCP, read leniently and written strictly: challenges wherever servers put them, payments in any of the
three forms clients send (`x402pay.mcp._wire`)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult, TextContent

from x402pay._protocol.headers import PAYMENT_REQUIRED, PAYMENT_RESPONSE
from x402pay.errors import MalformedPayment
from x402pay.mcp._wire import ChallengeBody, answer_of, challenge_in, error_answer, payment_header, payment_meta

REQUIRED = {
    "x402Version": 2,
    "error": "payment required",
    "resource": {"url": "mcp://tool/get_weather"},
    "accepts": [{"scheme": "exact", "network": "eip155:31337", "amount": "10000", "asset": "0x" + "aa" * 20,
                 "payTo": "0x" + "bb" * 20, "maxTimeoutSeconds": 60, "extra": {"name": "USD Coin", "version": "2"}}],
}  # fmt: skip
V1 = {"x402Version": 1, "error": "X-PAYMENT header is required", "accepts": [{"scheme": "exact"}]}
SETTLED = {"success": True, "transaction": "0x" + "cc" * 32, "network": "eip155:31337", "payer": "0x" + "dd" * 20}


def text(value: object) -> dict[str, Any]:
    return {"type": "text", "text": value if isinstance(value, str) else json.dumps(value)}


@pytest.mark.parametrize(
    "result",
    [
        {"isError": True, "structuredContent": REQUIRED, "content": [text(REQUIRED)]},  # the binding
        {"isError": True, "content": [text(REQUIRED)]},  # text only
        {"isError": True, "content": [text("first"), text(REQUIRED)]},  # not the first block
        {"isError": True, "content": [text({"x402/error": {"code": 402, "message": "pay", "data": REQUIRED}})]},
        {"isError": True, "structuredContent": {"x402/error": {"code": 402, "data": REQUIRED}}, "content": []},
        {"isError": True, "content": [text("pay")], "_meta": {"x402/error": REQUIRED}},  # Cloudflare's agents
    ],
    ids=["binding", "text", "second-block", "draft-text", "draft-structured", "meta-error"],
)
def test_a_challenge_is_found_wherever_a_server_put_it(result: dict[str, Any]) -> None:
    assert challenge_in(result) == REQUIRED


@pytest.mark.parametrize(
    "result",
    [
        {"isError": False, "structuredContent": REQUIRED, "content": [text(REQUIRED)]},  # a tool's own data
        {"isError": True, "content": [text("Error executing tool boom")]},
        {"isError": True, "content": [text("{not json")]},
        {"isError": True, "structuredContent": {"x402Version": 2, "accepts": "all"}, "content": []},
    ],
    ids=["not-an-error", "tool-error", "broken-json", "accepts-not-a-list"],
)
def test_what_is_not_a_challenge_is_not_read_as_one(result: dict[str, Any]) -> None:
    assert challenge_in(result) is None


def result_of(**fields: Any) -> CallToolResult:
    return CallToolResult.model_validate({"content": [], **fields})


def test_a_v2_challenge_is_a_402_with_its_header() -> None:
    answer = answer_of(result_of(isError=True, structuredContent=REQUIRED))
    assert answer.status == 402
    assert json.loads(base64.b64decode(answer.headers[PAYMENT_REQUIRED])) == REQUIRED


def test_a_v1_challenge_is_a_402_with_a_json_body() -> None:
    result = result_of(isError=True, content=[TextContent(type="text", text=json.dumps(V1))])
    answer = answer_of(result)
    assert (answer.status, answer.headers) == (402, {"content-type": "application/json"})
    assert isinstance(answer.raw, ChallengeBody)
    assert json.loads(answer.raw.body) == V1
    assert answer.raw.source is result


def test_a_tool_error_is_a_500_and_a_result_a_200_with_its_settlement() -> None:
    assert answer_of(result_of(isError=True, content=[TextContent(type="text", text="boom")])).status == 500
    answer = answer_of(result_of(_meta={"x402/payment-response": SETTLED}))
    assert answer.status == 200
    assert json.loads(base64.b64decode(answer.headers[PAYMENT_RESPONSE])) == SETTLED


def test_a_failed_settlement_inside_structured_content_is_read() -> None:
    failed = {"success": False, "errorReason": "insufficient_funds", "transaction": "", "network": "eip155:31337"}
    answer = answer_of(result_of(isError=True, structuredContent={**REQUIRED, "x402/payment-response": failed}))
    assert answer.status == 402
    assert json.loads(base64.b64decode(answer.headers[PAYMENT_RESPONSE])) == failed


def test_a_json_rpc_error_402_with_a_challenge_is_a_402() -> None:
    answer = error_answer(MCPError(402, "Payment required", REQUIRED))
    assert answer is not None
    assert answer.status == 402
    assert error_answer(MCPError(402, "Payment required")) is None
    assert error_answer(MCPError(-32602, "Invalid params", REQUIRED)) is None
    assert error_answer(RuntimeError("connection lost")) is None


PAYLOAD = {"x402Version": 2, "accepted": REQUIRED["accepts"][0], "payload": {"signature": "0x01"}}
ENCODED = base64.b64encode(json.dumps(PAYLOAD, separators=(",", ":")).encode()).decode()


@pytest.mark.parametrize("given", [PAYLOAD, json.dumps(PAYLOAD), ENCODED], ids=["object", "json-text", "base64"])
def test_a_server_reads_a_payment_in_each_form_clients_send(given: object) -> None:
    header = payment_header(given)
    assert header is not None
    assert json.loads(base64.b64decode(header)) == PAYLOAD


@pytest.mark.parametrize("given", [42, ["a"], "[1, 2]", "{broken"], ids=["number", "list", "json-list", "bad-json"])
def test_a_payment_in_no_known_form_is_malformed(given: object) -> None:
    with pytest.raises(MalformedPayment):
        payment_header(given)


def test_no_payment_is_none_and_the_client_writes_the_object() -> None:
    assert payment_header(None) is None
    assert payment_meta(("PAYMENT-SIGNATURE", ENCODED)) == {"x402/payment": PAYLOAD}
