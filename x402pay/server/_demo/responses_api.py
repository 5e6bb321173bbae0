"""The OpenAI Responses API over the fake model: create (streamed or not), retrieve, input items, cancel.

Responses are stored in memory; ``previous_response_id`` continues a stored conversation (its inputs and
outputs become the history the model sees).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from x402pay.server._demo.common import BadRequest, charge, json_body, max_tokens, model_name, new_id, sse, stream_flag
from x402pay.server._demo.model import Completion, Meter, complete


@dataclass
class Stored:
    """A stored response, the input items it was given, and the conversation up to and including it."""

    response: dict[str, Any]
    input_items: list[dict[str, Any]]
    history: list[dict[str, Any]] = field(default_factory=list)


class ResponseStore:
    """Responses by id, in memory (the demo runs in one process)."""

    def __init__(self) -> None:
        self._responses: dict[str, Stored] = {}

    def put(self, stored: Stored) -> None:
        """Store (or replace) a response."""
        self._responses[stored.response["id"]] = stored

    def get(self, response_id: str) -> Stored:
        """The stored response; `BadRequest` 404 if there is none."""
        stored = self._responses.get(response_id)
        if stored is None:
            raise BadRequest("response_not_found", f"no response with id {response_id!r}", status=404)
        return stored


async def create_response(request: Request) -> Response:
    """``POST /v1/responses``."""
    store: ResponseStore = request.app.state.responses
    try:
        body = await json_body(request)
        stream = stream_flag(body)
        items = _input_items(body)
        history = _history(store, body)
        completion = complete(history + items, max_tokens=max_tokens(body, "max_output_tokens"))
    except BadRequest as exc:
        return exc.response()
    meter: Meter = request.app.state.meter
    response = _response(body, completion)
    stored = Stored(response, items, [*history, *items, *response["output"]])
    if stream:
        return StreamingResponse(_events(request, stored, store, completion, meter), media_type="text/event-stream")
    charge(request, completion, meter, response["model"])
    store.put(stored)
    return JSONResponse(response)


async def retrieve_response(request: Request) -> Response:
    """``GET /v1/responses/{response_id}``."""
    try:
        return JSONResponse(request.app.state.responses.get(request.path_params["response_id"]).response)
    except BadRequest as exc:
        return exc.response()


async def list_input_items(request: Request) -> Response:
    """``GET /v1/responses/{response_id}/input_items`` (``order=asc|desc``, newest first by default)."""
    try:
        stored: Stored = request.app.state.responses.get(request.path_params["response_id"])
    except BadRequest as exc:
        return exc.response()
    items = list(stored.input_items)
    if request.query_params.get("order", "desc") != "asc":
        items.reverse()
    return JSONResponse(
        {
            "object": "list",
            "data": items,
            "first_id": items[0]["id"] if items else None,
            "last_id": items[-1]["id"] if items else None,
            "has_more": False,
        }
    )


async def cancel_response(request: Request) -> Response:
    """``POST /v1/responses/{response_id}/cancel``: an unfinished response becomes ``cancelled``; others as they are."""
    try:
        stored: Stored = request.app.state.responses.get(request.path_params["response_id"])
    except BadRequest as exc:
        return exc.response()
    if stored.response["status"] in ("queued", "in_progress"):
        stored.response["status"] = "cancelled"
    return JSONResponse(stored.response)


def _input_items(body: dict[str, Any]) -> list[dict[str, Any]]:
    raw = body.get("input")
    if raw is None:
        if body.get("previous_response_id") is None:
            raise BadRequest("missing_input", "input is required unless previous_response_id is given", "input")
        return []
    if isinstance(raw, str):
        raw = [{"role": "user", "content": raw}]
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        raise BadRequest("invalid_input", "input must be a string or a list of input items", param="input")
    return [_message_item(item) for item in raw]


def _message_item(item: dict[str, Any]) -> dict[str, Any]:
    content = item.get("content", "")
    if isinstance(content, str):
        content = [{"type": "input_text", "text": content}]
    return {"id": item.get("id") or new_id("msg_"), "type": "message", "role": item.get("role", "user"),
            "content": content}  # fmt: skip


def _history(store: ResponseStore, body: dict[str, Any]) -> list[dict[str, Any]]:
    previous = body.get("previous_response_id")
    if previous is None:
        return []
    if not isinstance(previous, str):
        raise BadRequest("invalid_value", "previous_response_id must be a string", param="previous_response_id")
    try:
        return list(store.get(previous).history)
    except BadRequest as exc:
        raise BadRequest(exc.code, exc.message, "previous_response_id", status=404) from exc


def _response(body: dict[str, Any], completion: Completion) -> dict[str, Any]:
    text = {"type": "output_text", "text": completion.text, "annotations": []}
    message = {"id": new_id("msg_"), "type": "message", "status": "completed", "role": "assistant", "content": [text]}
    return {
        "id": new_id("resp_"),
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed",
        "model": model_name(body),
        "output": [message],
        "output_text": completion.text,
        "previous_response_id": body.get("previous_response_id"),
        "instructions": body.get("instructions"),
        "usage": {
            "input_tokens": completion.prompt_tokens,
            "output_tokens": completion.completion_tokens,
            "total_tokens": completion.prompt_tokens + completion.completion_tokens,
        },
    }


async def _events(
    request: Request, stored: Stored, store: ResponseStore, completion: Completion, meter: Meter
) -> AsyncIterator[str]:
    final = stored.response
    message = final["output"][0]
    pending = {**final, "status": "in_progress", "output": [], "output_text": "", "usage": None}
    store.put(Stored(pending, stored.input_items, stored.history))
    where = {"item_id": message["id"], "output_index": 0, "content_index": 0}
    part = {"type": "output_text", "text": "", "annotations": []}
    events: list[tuple[str, dict[str, Any]]] = [
        ("response.created", {"response": pending}),
        ("response.in_progress", {"response": pending}),
        (
            "response.output_item.added",
            {"output_index": 0, "item": {**message, "status": "in_progress", "content": []}},
        ),
        ("response.content_part.added", {**where, "part": part}),
        *(("response.output_text.delta", {**where, "delta": delta}) for delta in completion.deltas()),
        ("response.output_text.done", {**where, "text": completion.text}),
        ("response.content_part.done", {**where, "part": message["content"][0]}),
        ("response.output_item.done", {"output_index": 0, "item": message}),
    ]
    for number, (kind, data) in enumerate(events):
        yield sse({"type": kind, "sequence_number": number, **data}, event=kind)
    charge(request, completion, meter, final["model"])
    if pending["status"] != "cancelled":  # cancelled meanwhile: keep what the client asked for
        store.put(stored)
    yield sse({"type": "response.completed", "sequence_number": len(events), "response": final}, "response.completed")
    yield "data: [DONE]\n\n"
