"""The ``payment-identifier`` extension: the payment names its logical request, so the server can deduplicate too.

A server that declares the extension in its 402 gets, in the payment's extensions, the declaration echoed with
``info.id`` set: the request's ``Idempotency-Key`` when it is a valid id (16 to 128 of ``[A-Za-z0-9_-]``, as the
keys the transport makes up are), else a digest of it. A re-sent payment is re-sent byte for byte, id included.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any, Final

PAYMENT_IDENTIFIER: Final = "payment-identifier"
_VALID_ID: Final = re.compile(r"[A-Za-z0-9_-]{16,128}")


def request_id(key: str) -> str:
    """The payment id of the logical request `key`: the key itself when it is a valid id, else ``pay_`` and a
    digest of it (the same key always gives the same id)."""
    if _VALID_ID.fullmatch(key):
        return key
    return "pay_" + hashlib.sha256(key.encode()).hexdigest()[:40]


def payment_identifier(offered: Mapping[str, Any] | None, key: str) -> dict[str, Any]:
    """The extension to add to the payment of the logical request `key`, or nothing if the server (whose 402's
    extensions are `offered`) did not declare it."""
    declared = (offered or {}).get(PAYMENT_IDENTIFIER)
    if not isinstance(declared, Mapping):
        return {}
    info = declared.get("info")
    given = dict(info) if isinstance(info, Mapping) else {}
    return {PAYMENT_IDENTIFIER: {**declared, "info": {**given, "id": request_id(key)}}}
