"""The Compose-compatible demo API: OpenAI shapes from the fake model (unpaid), then paid on anvil."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from server_support import decode, eip3009_payload, header, permit2_payload

from x402pay.server._demo import MODEL_NAME, DemoConfig, Meter, complete, demo_api, running_demo
from x402pay.server._serving import serve_app
from x402pay.testing import Devnet

CHAT = {
    "model": "fake",
    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi there"}],
}


@pytest.fixture(scope="module")
def api() -> Iterator[httpx.Client]:
    with serve_app(demo_api()) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client


def events(text: str) -> list[tuple[str | None, Any]]:
    """(event name, data) per SSE frame; data is JSON except the literal [DONE]."""
    parsed = []
    for frame in filter(None, text.split("\n\n")):
        fields = dict(line.split(": ", 1) for line in frame.split("\n"))
        data = fields["data"]
        parsed.append((fields.get("event"), data if data == "[DONE]" else json.loads(data)))
    return parsed


def test_the_fake_model_is_deterministic() -> None:
    first = complete(CHAT["messages"])
    assert first == complete(CHAT["messages"])
    assert first.text == "Echo: hi there"
    assert (first.prompt_tokens, first.completion_tokens) == (2 + 1 + 2 + 1, 3)
    assert "".join(first.deltas()) == first.text
    assert Meter(input_price=3, output_price=5).cost(first) == 6 * 3 + 3 * 5


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/inference"])
def test_chat_completion(api: httpx.Client, path: str) -> None:
    body = api.post(path, json=CHAT).json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "fake"
    assert body["choices"][0]["message"]["content"] == "Echo: hi there"
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 6, "completion_tokens": 3, "total_tokens": 9}


def test_chat_completion_stream(api: httpx.Client) -> None:
    response = api.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert response.headers["content-type"].startswith("text/event-stream")
    frames = events(response.text)
    assert frames[-1] == (None, "[DONE]")
    chunks = [data for _, data in frames[:-1]]
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(chunk["choices"][0]["delta"].get("content", "") for chunk in chunks if chunk["choices"])
    assert text == "Echo: hi there"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert (chunks[-1]["choices"], chunks[-1]["usage"]["total_tokens"]) == ([], 9)


@pytest.mark.parametrize("stream", ["true", 1, None, {"on": True}])
def test_a_stream_flag_that_is_not_a_boolean_is_invalid_stream(api: httpx.Client, stream: Any) -> None:
    response = api.post("/v1/chat/completions", json={**CHAT, "stream": stream})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_stream"
    assert api.post("/v1/responses", json={"input": "x", "stream": stream}).json()["error"]["code"] == "invalid_stream"


def test_tools_and_response_format_are_accepted(api: httpx.Client) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    body = {**CHAT, "tools": tools, "tool_choice": "auto", "response_format": {"type": "json_object"}}
    content = api.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]["content"]
    assert json.loads(content) == {"echo": "Echo: hi there"}


@pytest.mark.parametrize("body", [{"messages": []}, {"messages": "hi"}, {}, [1, 2]])
def test_chat_needs_messages(api: httpx.Client, body: Any) -> None:
    response = api.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] in ("invalid_messages", "invalid_json")


def test_responses_are_stored_and_continue_a_conversation(api: httpx.Client) -> None:
    first = api.post("/v1/responses", json={"model": "fake", "input": "tell me more"}).json()
    assert (first["object"], first["status"], first["output_text"]) == ("response", "completed", "Echo: tell me more")
    assert first["output"][0]["content"][0] == {"type": "output_text", "text": "Echo: tell me more", "annotations": []}
    assert api.get(f"/v1/responses/{first['id']}").json() == first

    items = api.get(f"/v1/responses/{first['id']}/input_items").json()
    assert items["object"] == "list"
    assert [item["content"][0]["text"] for item in items["data"]] == ["tell me more"]

    second = api.post("/v1/responses", json={"previous_response_id": first["id"], "input": "and again"}).json()
    assert second["previous_response_id"] == first["id"]
    assert second["output_text"] == "Echo: and again"
    assert second["usage"]["input_tokens"] > first["usage"]["input_tokens"] + first["usage"]["output_tokens"]
    hydrated = api.post("/v1/responses", json={"previous_response_id": second["id"]}).json()
    assert hydrated["output_text"] == "Echo: and again"


def test_responses_refusals(api: httpx.Client) -> None:
    missing = api.post("/v1/responses", json={"model": "fake"})
    assert (missing.status_code, missing.json()["error"]["code"]) == (400, "missing_input")
    unknown = api.post("/v1/responses", json={"previous_response_id": "resp_nope", "input": "x"})
    assert (unknown.status_code, unknown.json()["error"]["param"]) == (404, "previous_response_id")
    assert api.get("/v1/responses/resp_nope").status_code == 404
    assert api.get("/v1/responses/resp_nope/input_items").status_code == 404
    assert api.post("/v1/responses/resp_nope/cancel").status_code == 404


def test_cancelling_a_completed_response_leaves_it_completed(api: httpx.Client) -> None:
    created = api.post("/v1/responses", json={"input": "x"}).json()
    cancelled = api.post(f"/v1/responses/{created['id']}/cancel")
    assert (cancelled.status_code, cancelled.json()["status"]) == (200, "completed")


def test_responses_stream(api: httpx.Client) -> None:
    response = api.post("/v1/responses", json={"input": [{"role": "user", "content": "stream it"}], "stream": True})
    frames = events(response.text)
    names = [name for name, _ in frames]
    assert names[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert names[-4:] == ["response.content_part.done", "response.output_item.done", "response.completed", None]
    assert [data["sequence_number"] for _, data in frames[:-1]] == list(range(len(frames) - 1))
    deltas = "".join(data["delta"] for name, data in frames if name == "response.output_text.delta")
    assert deltas == "Echo: stream it"
    completed = frames[-2][1]["response"]
    assert completed["status"] == "completed"
    assert api.get(f"/v1/responses/{completed['id']}").json() == completed


MESSAGES = {"model": "claude-fake", "max_tokens": 100, "system": "Be brief.", "messages": [CHAT["messages"][1]]}


def test_an_anthropic_message(api: httpx.Client) -> None:
    body = api.post("/v1/messages", json=MESSAGES).json()
    assert {key: body[key] for key in ("type", "role", "model", "stop_reason", "stop_sequence")} == {
        "type": "message", "role": "assistant", "model": "claude-fake", "stop_reason": "end_turn", "stop_sequence": None
    }  # fmt: skip
    assert body["id"].startswith("msg_")
    assert body["content"] == [{"type": "text", "text": "Echo: hi there"}]
    assert body["usage"] == {"input_tokens": 6, "output_tokens": 3}  # the system prompt counts as input


def test_an_anthropic_message_cut_by_max_tokens_says_so(api: httpx.Client) -> None:
    body = api.post("/v1/messages", json={**MESSAGES, "max_tokens": 2}).json()
    assert (body["content"][0]["text"], body["stop_reason"]) == ("Echo: hi", "max_tokens")


def test_an_anthropic_message_stream(api: httpx.Client) -> None:
    response = api.post("/v1/messages", json={**MESSAGES, "stream": True})
    assert response.headers["content-type"].startswith("text/event-stream")
    frames = events(response.text)
    names = [name for name, _ in frames]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-4:] == ["content_block_delta", "content_block_stop", "message_delta", "message_stop"]
    assert all(data["type"] == name for name, data in frames)
    start = frames[0][1]["message"]
    assert (start["content"], start["stop_reason"], start["usage"]["input_tokens"]) == ([], None, 6)
    text = "".join(data["delta"]["text"] for name, data in frames if name == "content_block_delta")
    assert text == "Echo: hi there"
    assert frames[-2][1]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert frames[-2][1]["usage"] == {"output_tokens": 3}


@pytest.mark.parametrize(
    "body", [{"messages": [{"role": "user", "content": "x"}]}, {**MESSAGES, "messages": []}, {**MESSAGES, "system": 7}]
)
def test_anthropic_refusals_are_in_anthropics_shape(api: httpx.Client, body: dict[str, Any]) -> None:
    response = api.post("/v1/messages", json=body)
    assert response.status_code == 400
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_models(api: httpx.Client) -> None:
    assert api.get("/v1/models").json()["data"][0]["id"] == MODEL_NAME


# -- paid, on anvil --------------------------------------------------------------------------------------------

PAID = DemoConfig(upto_max=200_000, exact_price=7_000, meter=Meter(input_price=10, output_price=20))


@pytest.fixture
def demo(x402pay_chain: Devnet) -> Iterator[httpx.Client]:
    with running_demo(x402pay_chain, config=PAID) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client


def balance(devnet: Devnet, address: str) -> int:
    return int(devnet.contract("TestUSDC", devnet.usdc).functions.balanceOf(address).call())


def pay_upto(client: httpx.Client, devnet: Devnet, path: str, body: dict[str, Any], ceiling: str) -> httpx.Response:
    headers = {"x-x402-max-amount-wei": ceiling}
    challenge = client.post(path, json=body, headers=headers)
    assert challenge.status_code == 402
    [requirement] = decode(challenge.headers["payment-required"])["accepts"]
    assert requirement["amount"] == ceiling
    payment = header(permit2_payload(devnet, devnet.payers[0], requirement))
    return client.post(path, json=body, headers={**headers, "PAYMENT-SIGNATURE": payment})


@pytest.mark.chain
def test_a_paid_chat_stream_is_metered_by_tokens(demo: httpx.Client, x402pay_chain: Devnet) -> None:
    before = balance(x402pay_chain, x402pay_chain.payee.address)
    response = pay_upto(demo, x402pay_chain, "/v1/chat/completions", {**CHAT, "stream": True}, "150000")
    frames = events(response.text)
    assert frames[-1] == (None, "[DONE]")
    name, receipt = frames[-2]
    cost = 6 * 10 + 3 * 20
    assert name == "compose.receipt"
    assert receipt["finalAmountWei"] == str(cost)
    assert [item["key"] for item in receipt["lineItems"]] == ["input_tokens", "output_tokens"]
    assert receipt["meterSubject"] == "fake"
    assert balance(x402pay_chain, x402pay_chain.payee.address) == before + cost


@pytest.mark.chain
def test_a_paid_anthropic_stream_ends_with_the_receipt(demo: httpx.Client, x402pay_chain: Devnet) -> None:
    before = balance(x402pay_chain, x402pay_chain.payee.address)
    response = pay_upto(demo, x402pay_chain, "/v1/messages", {**MESSAGES, "stream": True}, "150000")
    frames = events(response.text)
    assert [name for name, _ in frames[-2:]] == ["message_stop", "compose.receipt"]  # no [DONE] to go before
    cost = 6 * 10 + 3 * 20
    assert frames[-1][1]["finalAmountWei"] == str(cost)
    assert frames[-1][1]["meterSubject"] == "claude-fake"
    assert balance(x402pay_chain, x402pay_chain.payee.address) == before + cost


@pytest.mark.chain
def test_a_paid_response_carries_payment_response_and_x_receipt(demo: httpx.Client, x402pay_chain: Devnet) -> None:
    response = pay_upto(demo, x402pay_chain, "/v1/responses", {"input": "one two three"}, "1000")
    assert response.status_code == 200, response.text
    cost = 4 * 10 + 4 * 20
    assert decode(response.headers["payment-response"])["amount"] == str(cost)
    assert decode(response.headers["x-receipt"])["finalAmountWei"] == str(cost)


@pytest.mark.chain
def test_the_fortune_is_exact(demo: httpx.Client, x402pay_chain: Devnet) -> None:
    before = balance(x402pay_chain, x402pay_chain.payee.address)
    [requirement] = decode(demo.get("/v1/fortune").headers["payment-required"])["accepts"]
    assert (requirement["scheme"], requirement["amount"]) == ("exact", "7000")
    payment = header(eip3009_payload(x402pay_chain, x402pay_chain.payers[0], requirement))
    assert demo.get("/v1/fortune", headers={"PAYMENT-SIGNATURE": payment}).status_code == 200
    assert balance(x402pay_chain, x402pay_chain.payee.address) == before + 7000


@pytest.mark.chain
def test_an_invalid_paid_request_is_not_charged(demo: httpx.Client, x402pay_chain: Devnet) -> None:
    before = balance(x402pay_chain, x402pay_chain.payers[0].address)
    response = pay_upto(demo, x402pay_chain, "/api/inference", {**CHAT, "stream": "yes"}, "5000")
    assert (response.status_code, response.json()["error"]["code"]) == (400, "invalid_stream")
    assert balance(x402pay_chain, x402pay_chain.payers[0].address) == before
