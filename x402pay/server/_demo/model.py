"""A deterministic fake language model and its meter: same input, same words, same token counts, same price."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from x402pay.server._receipts import LineItem

MODEL_NAME: Final = "x402pay-fake-1"
_GREETING: Final = ("Hello!", "Ask", "me", "anything.")


@dataclass(frozen=True)
class Completion:
    """What the fake model said: its words (one per streamed chunk), the token counts, and whether the token
    limit cut it short."""

    words: tuple[str, ...]
    prompt_tokens: int
    truncated: bool = False

    @property
    def text(self) -> str:
        """The whole reply."""
        return " ".join(self.words)

    @property
    def completion_tokens(self) -> int:
        """One token per word."""
        return len(self.words)

    def deltas(self) -> list[str]:
        """The reply as streamed: each word with its leading space, so the deltas join to `text`."""
        return [word if index == 0 else " " + word for index, word in enumerate(self.words)]


@dataclass(frozen=True)
class Meter:
    """Token prices in atomic USDC units per token (the default: 1 per input token, 2 per output token)."""

    input_price: int = 1
    output_price: int = 2

    def cost(self, completion: Completion) -> int:
        """What a completion costs."""
        return completion.prompt_tokens * self.input_price + completion.completion_tokens * self.output_price

    def line_items(self, completion: Completion) -> list[LineItem]:
        """The receipt's line items for a completion."""
        return [
            _item("input_tokens", completion.prompt_tokens, self.input_price),
            _item("output_tokens", completion.completion_tokens, self.output_price),
        ]


def _item(key: str, quantity: int, unit_price: int) -> LineItem:
    return LineItem(
        key=key, unit="tokens", quantity=quantity, unit_price_usd=unit_price / 1e6, amount_wei=quantity * unit_price
    )


def complete(
    messages: Sequence[dict[str, Any]], *, max_tokens: int | None = None, json_mode: bool = False
) -> Completion:
    """Answer `messages` (chat or Responses items): "Echo:" and the last user text, word for word.

    A prompt token is a whitespace-separated word of any message, plus one per message.
    """
    texts = [(message.get("role", "user"), text_of(message.get("content"))) for message in messages]
    prompt_tokens = sum(len(text.split()) + 1 for _, text in texts)
    last_user = next((text for role, text in reversed(texts) if role == "user" and text.strip()), "")
    words: tuple[str, ...] = ("Echo:", *last_user.split()) if last_user else _GREETING
    if json_mode:
        words = tuple(json.dumps({"echo": " ".join(words)}).split(" "))
    limit = len(words) if max_tokens is None else max(max_tokens, 1)
    return Completion(words=words[:limit], prompt_tokens=prompt_tokens, truncated=len(words) > limit)


def text_of(content: Any) -> str:
    """The text of a message's content: a string, or a list of text parts (chat ``text``, Responses ``input_text``)."""
    if isinstance(content, str):
        return content
    if isinstance(content, Iterable) and not isinstance(content, (bytes, dict)):
        parts = (part.get("text") for part in content if isinstance(part, dict))
        return " ".join(part for part in parts if isinstance(part, str))
    return ""
