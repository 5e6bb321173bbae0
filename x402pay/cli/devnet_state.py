"""The running devnet's record in the state dir, so that ``serve-demo`` and ``fund`` find it without flags.

It holds no key: the devnet's accounts are anvil's public dev accounts, derived again from its mnemonic when needed.
A record whose chain does not answer (the devnet was killed) is ignored.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from x402pay.cli.config import state_dir

if TYPE_CHECKING:
    from x402pay.testing import Devnet

RECORD: Final = "devnet.json"
#: How long a record's chain may take to answer before it is taken for gone.
_PROBE_SECONDS: Final = 2.0


@dataclass(frozen=True)
class RunningDevnet:
    """What another command needs of a running devnet: where its chain is, and its token."""

    rpc_url: str
    chain_id: int
    usdc: str


def record(devnet: Devnet) -> Path:
    """Write `devnet`'s record (replacing any older one); returns its path, for `forget`."""
    path = state_dir() / RECORD
    path.parent.mkdir(parents=True, exist_ok=True)
    running = RunningDevnet(devnet.rpc_url, devnet.chain_id, devnet.usdc)
    path.write_text(json.dumps(asdict(running)) + "\n", encoding="utf-8")
    return path


def forget(path: Path) -> None:
    """Remove the record a devnet wrote, when it stops."""
    path.unlink(missing_ok=True)


def running() -> RunningDevnet | None:
    """The devnet recorded in the state dir, if its chain answers with the recorded chain id; else None."""
    try:
        found = json.loads((state_dir() / RECORD).read_text(encoding="utf-8"))
        devnet = RunningDevnet(str(found["rpc_url"]), int(found["chain_id"]), str(found["usdc"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return devnet if _answers(devnet) else None


def _answers(devnet: RunningDevnet) -> bool:
    import httpx

    try:
        answer = httpx.post(devnet.rpc_url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []},
                            timeout=_PROBE_SECONDS)  # fmt: skip
        return int(answer.json()["result"], 16) == devnet.chain_id
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return False
