"""Helpers shared by the demo routes: OpenAI- and Anthropic-style errors, JSON bodies, SSE frames, ids, metering."""

from __future__ import annotations

import json
import secrets
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse

from x402pay._protocol.codec import MAX_BODY_BYTES
from x402pay.server._demo.model import MODEL_NAME, Completion, Meter
from x402pay.server._receipts import paid_request


class BadRequest(Exception):
    """A request the demo API refuses, with an OpenAI-style error code and the parameter at fault."""

    def __init__(self, code: str, message: str, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.param, self.status = code, message, param, status

    def response(self) -> JSONResponse:
        """The OpenAI-compatible error body."""
        error = {"message": self.message, "type": "invalid_request_error", "code": self.code, "param": self.param}
        return JSONResponse({"error": error}, status_code=self.status)

    def anthropic_response(self) -> JSONResponse:
        """The Anthropic-compatible error body (the code is not part of it: Anthropic names only a type)."""
        kind = _ANTHROPIC_ERROR_TYPES.get(self.status, "invalid_request_error")
        error = {"type": kind, "message": self.message}
        return JSONResponse({"type": "error", "error": error}, status_code=self.status)


_ANTHROPIC_ERROR_TYPES: Final = {404: "not_found_error", 413: "request_too_large"}


async def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object; `BadRequest` if it is not one."""
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise BadRequest("request_too_large", f"the body is over {MAX_BODY_BYTES} bytes", status=413)
    try:
        body = json.loads(raw or b"null")
    except ValueError as exc:
        raise BadRequest("invalid_json", f"the body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BadRequest("invalid_json", "the body must be a JSON object")
    return body


def stream_flag(body: dict[str, Any]) -> bool:
    """The ``stream`` field: absent means False; anything but a boolean is ``invalid_stream``."""
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest("invalid_stream", "stream must be a boolean", param="stream")
    return stream


def max_tokens(body: dict[str, Any], *names: str) -> int | None:
    """The first positive-int token limit among `names`, if any."""
    for name in names:
        value = body.get(name)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise BadRequest("invalid_value", f"{name} must be a positive integer", param=name)
            return value
    return None


def model_name(body: dict[str, Any]) -> str:
    """The requested model name (any string is served by the fake model)."""
    model = body.get("model", MODEL_NAME)
    return model if isinstance(model, str) and model else MODEL_NAME


def charge(request: Request, completion: Completion, meter: Meter, model: str) -> None:
    """Report the metered cost to the payment middleware (capped at the signed maximum); no-op when unpaid."""
    paid = paid_request(request.scope)
    if paid is not None and paid.scheme == "upto":
        paid.charge(min(meter.cost(completion), paid.maximum), line_items=meter.line_items(completion), subject=model)


def sse(data: dict[str, Any], event: str | None = None) -> str:
    """One SSE frame (named when `event` is given)."""
    prefix = f"event: {event}\n" if event else ""
    return f"{prefix}data: {json.dumps(data, separators=(',', ':'))}\n\n"


def new_id(prefix: str) -> str:
    """A fresh id like OpenAI's (``chatcmpl-…``, ``resp_…``, ``msg_…``)."""
    return prefix + secrets.token_hex(12)
