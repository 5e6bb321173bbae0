"""Every Python example in the README runs, against the demo API on the devnet.

The examples name https://api.example.com, https://rpc.example.com, Base's USDC and network; the test puts the
local servers, the devnet's token and network in their place, and a funded test key in X402PAY_PRIVATE_KEY.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from x402pay.server._serving import serve_app
from x402pay.testing import Devnet

pytestmark = pytest.mark.chain

README = Path(__file__).resolve().parents[2] / "README.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


@pytest.fixture(scope="module")
def demo_url(x402pay_devnet: Devnet) -> Iterator[str]:
    from x402pay.server._demo import running_demo

    with running_demo(x402pay_devnet) as url:
        yield url


def localized(code: str, devnet: Devnet, url: str) -> str:
    replacements = {
        "https://api.example.com": url,
        "https://rpc.example.com": devnet.rpc_url,
        "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913": devnet.usdc,
        "eip155:8453": devnet.network,
    }
    for public, local in replacements.items():
        code = code.replace(public, local)
    return code


@pytest.mark.parametrize("index", range(len(EXAMPLES)), ids=lambda index: f"example-{index + 1}")
def test_readme_example_runs(
    index: int,
    x402pay_chain: Devnet,
    demo_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("X402PAY_PRIVATE_KEY", "0x" + x402pay_chain.payers[0].key.hex())
    namespace: dict[str, Any] = {"__name__": f"readme_example_{index + 1}"}
    exec(compile(localized(EXAMPLES[index], x402pay_chain, demo_url), f"README example {index + 1}", "exec"), namespace)  # noqa: S102
    if "test_my_bot_pays" in namespace:
        namespace["test_my_bot_pays"](x402pay_chain)
    if "app" in namespace:
        with serve_app(namespace["app"]) as url:
            assert httpx.get(url + "/report").status_code == 402
    printed = capsys.readouterr().out
    if "print(" in EXAMPLES[index]:
        assert printed.strip()
    if 'verify="inline"' in EXAMPLES[index]:
        assert printed.splitlines()[0] == "verified"
    if "anthropic.Anthropic" in EXAMPLES[index]:
        text, amounts = printed.splitlines()
        signed, settled = map(int, amounts.split())
        assert (text, signed) == ("Echo: hello", 100_000)
        assert 0 < settled < signed  # metered: the demo charged for the tokens, not the maximum
    if "x402pay.mcp" in EXAMPLES[index]:
        assert printed.splitlines() == ["sunny in Paris 10000", "Four words 4000"]
    if "prepay=True" in EXAMPLES[index]:
        assert printed.splitlines()[0] == "[False, True, True]"


def test_the_readme_has_the_examples_it_promises() -> None:
    assert len(EXAMPLES) >= 6
    assert any("AsyncPaymentTransport" in example for example in EXAMPLES)
    assert any("openai.OpenAI" in example for example in EXAMPLES)
    assert any("anthropic.Anthropic" in example and "claude.messages" in example for example in EXAMPLES)
    assert any('verify="inline"' in example for example in EXAMPLES)
    assert any("prepay=True" in example for example in EXAMPLES)
