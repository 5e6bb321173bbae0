"""Facilitators over HTTP: `HTTPFacilitator` (a client of ``/verify``, ``/settle``, ``/supported``) and
`facilitator_app` (any `Facilitator`, such as `LocalFacilitator`, served with those three routes).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

import httpx
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from x402pay._protocol.codec import MAX_BODY_BYTES, decode_json, parse_model
from x402pay._protocol.models import PaymentPayload, PaymentRequirements, SettleResponse
from x402pay.errors import FacilitatorError, X402PayError
from x402pay.server._facilitator import Facilitator, SupportedResponse, VerifyResponse

ModelT = TypeVar("ModelT", bound=BaseModel)
_VERDICT_FIELDS: Final = {VerifyResponse: "isValid", SettleResponse: "success"}


class HTTPFacilitator:
    """A remote facilitator, e.g. ``HTTPFacilitator("https://x402.org/facilitator")``.

    Refusals come back as values; a facilitator that cannot be reached or answers something that is not a
    verdict raises `FacilitatorError`. Pass `client` to share an ``httpx.AsyncClient`` (auth headers, proxies);
    otherwise one is made and closed by `aclose` (or ``async with``). Its `timeout` (60 s) outlasts a facilitator's
    own wait for a settlement's receipt (`LocalFacilitator`'s is 30 s), so that its ``settlement_pending`` answer,
    which names the transaction, arrives; a ``/settle`` that times out is answered pending without it.
    """

    def __init__(self, url: str, *, client: httpx.AsyncClient | None = None, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self._client = client or httpx.AsyncClient(timeout=timeout)
        self._owns_client = client is None

    async def verify(self, payload: PaymentPayload, requirements: PaymentRequirements) -> VerifyResponse:
        """``POST /verify``."""
        return await self._post("/verify", payload, requirements, VerifyResponse)

    async def settle(self, payload: PaymentPayload, requirements: PaymentRequirements) -> SettleResponse:
        """``POST /settle`` (for upto, `requirements.amount` is the amount to charge)."""
        return await self._post("/settle", payload, requirements, SettleResponse)

    async def supported(self) -> SupportedResponse:
        """``GET /supported``."""
        response = await self._request("GET", "/supported")
        if response.status_code != 200:
            raise FacilitatorError(f"{self.url}/supported answered HTTP {response.status_code}")
        return self._parse(response, SupportedResponse)

    async def aclose(self) -> None:
        """Close the HTTP client if this facilitator made it."""
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> HTTPFacilitator:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _post(
        self, path: str, payload: PaymentPayload, requirements: PaymentRequirements, model: type[ModelT]
    ) -> ModelT:
        body = {
            "x402Version": payload.x402_version,
            "paymentPayload": payload.to_wire(),
            "paymentRequirements": requirements.to_wire(),
        }
        response = await self._request("POST", path, json=body)
        if response.status_code != 200 and not _is_verdict(response, _VERDICT_FIELDS[model]):
            raise FacilitatorError(f"{self.url}{path} answered HTTP {response.status_code}: {response.text[:200]}")
        return self._parse(response, model)

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._client.request(method, self.url + path, **kwargs)
        except httpx.HTTPError as exc:
            raise FacilitatorError(f"the facilitator at {self.url} is unreachable: {exc!r}") from exc

    def _parse(self, response: httpx.Response, model: type[ModelT]) -> ModelT:
        what = f"{self.url} {model.__name__}"
        data = decode_json(response.content, what=what, error=FacilitatorError)
        return parse_model(data, model, what=what, error=FacilitatorError)


def _is_verdict(response: httpx.Response, field: str) -> bool:
    """Some facilitators answer a refusal with a 4xx status and a well-formed verdict: accept that as a verdict."""
    try:
        data = response.json()
    except ValueError:
        return False
    return isinstance(data, dict) and isinstance(data.get(field), bool)


class _BadRequest(X402PayError):
    """A facilitator request that is not ``{x402Version, paymentPayload, paymentRequirements}``."""


def facilitator_app(facilitator: Facilitator) -> Starlette:
    """Serve `facilitator` over HTTP: ``POST /verify``, ``POST /settle``, ``GET /supported`` (x402 facilitator API)."""

    async def verify(request: Request) -> Response:
        return await _answer(request, facilitator.verify)

    async def settle(request: Request) -> Response:
        return await _answer(request, facilitator.settle)

    async def supported(request: Request) -> Response:
        try:
            return JSONResponse((await facilitator.supported()).to_wire())
        except FacilitatorError as exc:
            return JSONResponse({"error": str(exc)}, status_code=502)

    return Starlette(
        routes=[
            Route("/verify", verify, methods=["POST"]),
            Route("/settle", settle, methods=["POST"]),
            Route("/supported", supported, methods=["GET"]),
        ]
    )


Action = Callable[[PaymentPayload, PaymentRequirements], Awaitable[VerifyResponse | SettleResponse]]


async def _answer(request: Request, action: Action) -> Response:
    try:
        payload, requirements = await _read_request(request)
        verdict = await action(payload, requirements)
    except _BadRequest as exc:
        return JSONResponse({"error": "invalid_payload", "errorMessage": str(exc)}, status_code=400)
    except FacilitatorError as exc:
        return JSONResponse({"error": "unexpected_error", "errorMessage": str(exc)}, status_code=502)
    return JSONResponse(verdict.to_wire())


async def _read_request(request: Request) -> tuple[PaymentPayload, PaymentRequirements]:
    if int(request.headers.get("content-length") or 0) > MAX_BODY_BYTES:
        raise _BadRequest(f"the request is over {MAX_BODY_BYTES} bytes")
    data = decode_json(await request.body(), what="the facilitator request", error=_BadRequest)
    if not isinstance(data, dict):
        raise _BadRequest("the facilitator request is not a JSON object")
    payload = parse_model(data.get("paymentPayload"), PaymentPayload, what="paymentPayload", error=_BadRequest)
    requirements = parse_model(
        data.get("paymentRequirements"), PaymentRequirements, what="paymentRequirements", error=_BadRequest
    )
    return payload, requirements
