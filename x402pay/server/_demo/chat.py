"""``POST /v1/chat/completions`` (and its alias ``POST /api/inference``): OpenAI chat completions, streamed or not."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from x402pay.server._demo.common import BadRequest, charge, json_body, max_tokens, model_name, new_id, sse, stream_flag
from x402pay.server._demo.model import Completion, Meter, complete


async def chat_completions(request: Request) -> Response:
    """Answer a chat completion request with the fake model; ``tools``, ``tool_choice`` are accepted and unused."""
    try:
        body = await json_body(request)
        stream = stream_flag(body)
        completion = complete(
            _messages(body), max_tokens=max_tokens(body, "max_completion_tokens", "max_tokens"), json_mode=_json(body)
        )
    except BadRequest as exc:
        return exc.response()
    meter: Meter = request.app.state.meter
    model = model_name(body)
    head: dict[str, Any] = {"id": new_id("chatcmpl-"), "created": int(time.time()), "model": model}
    if stream:
        return StreamingResponse(_chunks(request, completion, meter, head), media_type="text/event-stream")
    charge(request, completion, meter, model)
    message = {"role": "assistant", "content": completion.text, "refusal": None}
    return JSONResponse(
        {
            **head,
            "object": "chat.completion",
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
            "usage": _usage(completion),
        }
    )


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(item, dict) for item in messages):
        raise BadRequest("invalid_messages", "messages must be a non-empty list of message objects", param="messages")
    return messages


def _json(body: dict[str, Any]) -> bool:
    response_format = body.get("response_format")
    return isinstance(response_format, dict) and response_format.get("type") in ("json_object", "json_schema")


def _usage(completion: Completion) -> dict[str, int]:
    return {
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
        "total_tokens": completion.prompt_tokens + completion.completion_tokens,
    }


async def _chunks(request: Request, completion: Completion, meter: Meter, head: dict[str, Any]) -> AsyncIterator[str]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return sse({**head, "object": "chat.completion.chunk", "choices": [choice]})

    yield chunk({"role": "assistant", "content": ""})
    for delta in completion.deltas():
        yield chunk({"content": delta})
    yield chunk({}, finish="stop")
    yield sse({**head, "object": "chat.completion.chunk", "choices": [], "usage": _usage(completion)})
    charge(request, completion, meter, head["model"])
    yield "data: [DONE]\n\n"
