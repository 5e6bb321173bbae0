"""``POST /v1/messages``: Anthropic's Messages API over the fake model, streamed or not.

A stream is Anthropic's named events, each frame's ``type`` equal to its event name: ``message_start``,
``content_block_start``, ``ping``, one ``content_block_delta`` (``text_delta``) per word, ``content_block_stop``,
``message_delta`` (stop reason and usage), ``message_stop``. Paid like the chat route: metered by tokens; the
middleware adds the receipt (headers, or an in-band frame at the end of a stream).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from x402pay.server._demo.common import BadRequest, charge, json_body, max_tokens, model_name, new_id, sse, stream_flag
from x402pay.server._demo.model import Completion, Meter, complete


async def create_message(request: Request) -> Response:
    """Answer a Messages request with the fake model; ``system`` counts as input, ``tools`` are accepted, unused."""
    try:
        body = await json_body(request)
        stream = stream_flag(body)
        limit = max_tokens(body, "max_tokens")
        if limit is None:
            raise BadRequest("missing_max_tokens", "max_tokens: Field required", param="max_tokens")
        completion = complete(_conversation(body), max_tokens=limit)
    except BadRequest as exc:
        return exc.anthropic_response()
    meter: Meter = request.app.state.meter
    message = anthropic_message(model_name(body), completion)
    if stream:
        return StreamingResponse(_stream(request, message, completion, meter), media_type="text/event-stream")
    charge(request, completion, meter, message["model"])
    return JSONResponse(message)


def anthropic_message(model: str, completion: Completion) -> dict[str, Any]:
    """The Message object of a whole `completion`, as a non-streamed answer returns it."""
    return {
        "id": new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "content": [{"type": "text", "text": completion.text}],
        "model": model,
        "stop_reason": "max_tokens" if completion.truncated else "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": completion.prompt_tokens, "output_tokens": completion.completion_tokens},
    }


def message_frames(message: dict[str, Any], completion: Completion) -> list[str]:
    """`message` as Anthropic streams it: the SSE frames from ``message_start`` to ``message_stop``."""
    started = {**message, "content": [], "stop_reason": None, "stop_sequence": None,
               "usage": {**message["usage"], "output_tokens": 0}}  # fmt: skip
    delta = {"stop_reason": message["stop_reason"], "stop_sequence": message["stop_sequence"]}
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": started},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
        *({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}
          for text in completion.deltas()),
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": delta, "usage": {"output_tokens": completion.completion_tokens}},
        {"type": "message_stop"},
    ]  # fmt: skip
    return [sse(event, event=event["type"]) for event in events]


def _conversation(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(item, dict) for item in messages):
        raise BadRequest("invalid_messages", "messages: must be a non-empty list of message objects", "messages")
    system = body.get("system")
    if system is None:
        return messages
    if not isinstance(system, (str, list)):
        raise BadRequest("invalid_system", "system: must be a string or a list of text blocks", param="system")
    return [{"role": "system", "content": system}, *messages]


async def _stream(
    request: Request, message: dict[str, Any], completion: Completion, meter: Meter
) -> AsyncIterator[str]:
    for frame in message_frames(message, completion):
        yield frame
    charge(request, completion, meter, message["model"])
