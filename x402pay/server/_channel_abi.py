"""The settlement contract's functions a channel's paid side calls (x402 ``batch-settlement``), as web3 ABI fragments.

``ChannelConfig`` is ``(payer, payerAuthorizer, receiver, receiverAuthorizer, token, uint40 withdrawDelay, bytes32
salt)``; a ``VoucherClaim`` is ``((ChannelConfig, uint128 maxClaimableAmount), bytes signature, uint128
totalClaimed)``. A unit test holds these to the compiled contract's ABI.
"""

from __future__ import annotations

from typing import Any, Final

Fragment = dict[str, Any]


def _param(kind: str, name: str = "", components: list[Fragment] | None = None) -> Fragment:
    return {"type": kind, "name": name} | ({"components": components} if components is not None else {})


def _function(name: str, inputs: list[Fragment], outputs: list[Fragment], *, view: bool = False) -> Fragment:
    mutability = "view" if view else "nonpayable"
    return {"type": "function", "name": name, "inputs": inputs, "outputs": outputs, "stateMutability": mutability}


_CONFIG: Final = [
    _param("address", "payer"),
    _param("address", "payerAuthorizer"),
    _param("address", "receiver"),
    _param("address", "receiverAuthorizer"),
    _param("address", "token"),
    _param("uint40", "withdrawDelay"),
    _param("bytes32", "salt"),
]
_VOUCHER: Final = [_param("tuple", "channel", _CONFIG), _param("uint128", "maxClaimableAmount")]
_CLAIM: Final = [_param("tuple", "voucher", _VOUCHER), _param("bytes", "signature"), _param("uint128", "totalClaimed")]
_ID: Final = [_param("bytes32", "channelId")]

BATCH_SETTLEMENT_ABI: Final = [
    _function(
        "deposit",
        [
            _param("tuple", "config", _CONFIG),
            _param("uint128", "amount"),
            _param("address", "collector"),
            _param("bytes", "collectorData"),
        ],
        [],
    ),
    _function("claimWithSignature", [_param("tuple[]", "voucherClaims", _CLAIM), _param("bytes", "signature")], []),
    _function("settle", [_param("address", "receiver"), _param("address", "token")], []),
    _function(
        "refundWithSignature",
        [
            _param("tuple", "config", _CONFIG),
            _param("uint128", "amount"),
            _param("uint256", "nonce"),
            _param("bytes", "receiverAuthorizerSignature"),
        ],
        [],
    ),
    _function("multicall", [_param("bytes[]", "data")], [_param("bytes[]", "results")]),
    _function("channels", _ID, [_param("uint128", "balance"), _param("uint128", "totalClaimed")], view=True),
    _function("pendingWithdrawals", _ID, [_param("uint128", "amount"), _param("uint40", "initiatedAt")], view=True),
    _function("refundNonce", _ID, [_param("uint256", "")], view=True),
    _function(
        "receivers",
        [_param("address", "receiver"), _param("address", "token")],
        [_param("uint128", "totalClaimed"), _param("uint128", "totalSettled")],
        view=True,
    ),
]
