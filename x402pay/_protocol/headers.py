"""HTTP header names of x402 (v1 and v2) and of the upto ceiling, as the wire spells them."""

from __future__ import annotations

from typing import Final

#: v2 challenge (server to client): base64 JSON PaymentRequired.
PAYMENT_REQUIRED: Final = "PAYMENT-REQUIRED"
#: v2 payment (client to server): base64 JSON PaymentPayload.
PAYMENT_SIGNATURE: Final = "PAYMENT-SIGNATURE"
#: v1 payment (client to server).
X_PAYMENT: Final = "X-PAYMENT"
#: Settlement (server to client), v2 then v1.
PAYMENT_RESPONSE: Final = "PAYMENT-RESPONSE"
X_PAYMENT_RESPONSE: Final = "X-PAYMENT-RESPONSE"
#: The client's ceiling for upto, in atomic units despite its name; the same value on the paid retry.
MAX_AMOUNT: Final = "x-x402-max-amount-wei"
#: Set on a request to a channel-priced URL to ask for the channel's unspent escrow back (``all``, or atomic units)
#: instead of paying; x402pay removes it before the request leaves.
CHANNEL_REFUND: Final = "x-x402pay-channel-refund"
