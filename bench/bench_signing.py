"""Signing throughput: eth-account's ``sign_typed_data`` against x402pay's fast712 path, per x402 typed-data shape.

Both contenders sign the same fresh messages (random amounts, recipients and nonces, one token domain, as a payer
sees them) in interleaved rounds; the script prints the median signs/s of each, their ratio, and where the fast
path spends its time (digest vs secp256k1 signature), then writes the "signing" section of BENCHMARKS.md.

Run from the repository root: ``.venv/bin/python -m bench.bench_signing`` (``--help`` for rounds and sizes).
"""

from __future__ import annotations

import argparse
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from coincurve import PrivateKey
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address

from bench.harness import CPU_CLOCK, interleaved_rates, machine, median, paired_ratio, today, versions, write_section
from x402pay import Wallet
from x402pay._schemes import eip712, fast712

TARGET_RATIO = 8.0
TARGET_RATE = 10_000
USDC = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"  # USDC on Base
TOKEN_NAME, TOKEN_VERSION = "USD Coin", "2"  # its EIP-712 domain
PROXY = "0x4020A4f3b7b90ccA423B9fabCc0CE57C6C240002"  # the x402 upto Permit2 proxy
PERMIT2 = "0x000000000022D473030F116dDEE9F6B43aC78BA3"


@dataclass(frozen=True)
class Result:
    """One shape's medians: signs/s of each contender, their paired ratio, the fast path's microseconds per step."""

    shape: str
    eth_account: float
    fast: float
    ratio: float
    encode_us: float
    digest_us: float
    sign_us: float

    @property
    def met(self) -> bool:
        """Whether both targets hold: >= 8x eth-account and >= 10,000 signs/s."""
        return self.ratio >= TARGET_RATIO and self.fast >= TARGET_RATE


def _address() -> str:
    return to_checksum_address(secrets.token_bytes(20))


def _amount() -> int:
    return 1 + secrets.randbelow(10**9)


def _transfer(payer: str) -> dict[str, Any]:
    authorization = {
        "from": payer,
        "to": _address(),
        "value": _amount(),
        "validAfter": 1_764_000_000,
        "validBefore": 1_764_000_300,
        "nonce": "0x" + secrets.token_hex(32),
    }
    return eip712.transfer_with_authorization(
        token_name=TOKEN_NAME, token_version=TOKEN_VERSION, chain_id=8453, token=USDC, authorization=authorization
    )


def _permit2(payer: str, upto: bool) -> dict[str, Any]:
    witness: dict[str, Any] = {"to": _address(), "validAfter": 1_764_000_000}
    if upto:
        witness = {"to": witness["to"], "facilitator": _address(), "validAfter": witness["validAfter"]}
    return eip712.permit_witness_transfer_from(
        chain_id=8453,
        token=USDC,
        amount=_amount(),
        spender=PROXY,
        nonce=int.from_bytes(secrets.token_bytes(32), "big"),
        deadline=1_764_000_300,
        witness=witness,
        witness_fields=eip712.UPTO_WITNESS_FIELDS if upto else eip712.EXACT_WITNESS_FIELDS,
    )


def _permit(payer: str) -> dict[str, Any]:
    return eip712.eip2612_permit(
        token_name=TOKEN_NAME,
        token_version=TOKEN_VERSION,
        chain_id=8453,
        token=USDC,
        owner=payer,
        spender=PERMIT2,
        value=_amount(),
        nonce=secrets.randbelow(1000),
        deadline=1_764_000_300,
    )


SHAPES: dict[str, Callable[[str], dict[str, Any]]] = {
    "TransferWithAuthorization (EIP-3009, exact)": _transfer,
    "PermitWitnessTransferFrom (Permit2, exact)": lambda payer: _permit2(payer, upto=False),
    "PermitWitnessTransferFrom (Permit2, upto)": lambda payer: _permit2(payer, upto=True),
    "Permit (EIP-2612)": _permit,
}


def _each(function: Callable[[Any], object], items: list[Any]) -> Callable[[], int]:
    def batch() -> int:
        for item in items:
            function(item)
        return len(items)

    return batch


def bench_shape(shape: str, account: LocalAccount, messages: int, rounds: int) -> Result:
    """Time both paths over `messages` fresh messages of `shape` (checked byte-identical first)."""
    wallet, key = Wallet(account), PrivateKey(bytes(account.key))
    typed = [SHAPES[shape](account.address) for _ in range(messages)]
    for typed_data in typed:
        if wallet.sign_typed_data(typed_data) != account.sign_typed_data(full_message=typed_data).signature:
            raise SystemExit(f"{shape}: the fast path's signature differs from eth-account's")
    digests = [fast712.typed_data_digest(typed_data) for typed_data in typed]
    rates = interleaved_rates(
        {
            "eth-account": _each(lambda typed_data: account.sign_typed_data(full_message=typed_data), typed),
            "fast": _each(wallet.sign_typed_data, typed),
            "encode": _each(lambda typed_data: encode_typed_data(full_message=typed_data), typed),
            "digest": _each(fast712.typed_data_digest, typed),
            "sign": _each(lambda digest: fast712.sign_digest(key, digest), digests),
        },
        rounds,
        clock=CPU_CLOCK,
    )
    return Result(
        shape=shape,
        eth_account=median(rates["eth-account"]),
        fast=median(rates["fast"]),
        ratio=paired_ratio(rates["fast"], rates["eth-account"]),
        encode_us=1e6 / median(rates["encode"]),
        digest_us=1e6 / median(rates["digest"]),
        sign_us=1e6 / median(rates["sign"]),
    )


def report(results: list[Result], messages: int, rounds: int) -> str:
    """The BENCHMARKS.md section: machine, versions, method, one table row per shape, verdict."""
    rows = "\n".join(
        f"| {r.shape} | {r.eth_account:,.0f} | {r.fast:,.0f} | {r.ratio:.1f}x | {'met' if r.met else 'MISSED'} |"
        f" {r.encode_us:.0f} | {r.digest_us:.1f} | {r.sign_us:.1f} |"
        for r in results
    )
    return f"""## Signing: EIP-712 for x402's typed data

Run `{today()}` with `.venv/bin/python -m bench.bench_signing --messages {messages} --rounds {rounds}`.

- Machine: {machine()}
- Versions: {versions("x402pay", "eth-account", "eth-keys", "coincurve", "pycryptodome")}
- Method: {messages} fresh messages per shape, all signed by each contender in each of {rounds} interleaved rounds
  (order rotating, one warm-up round not counted); median signs per second of this process's CPU time (signing is
  pure CPU work on one core; CPU time is skewed less than wall time by other work on a shared machine), and the
  median of the per-round ratios. Both contenders produce the same bytes (checked per message before timing).
- eth-account: `LocalAccount.sign_typed_data(full_message=...)` (eth-keys on coincurve). x402pay:
  `Wallet.sign_typed_data` over a `LocalAccount`, i.e. `x402pay._schemes.fast712`.
- Where the time goes, per signature (medians of the same rounds): eth-account's `encode_typed_data` alone; the fast
  path's EIP-712 digest (shape check, ABI words, keccak: 2 for EIP-3009 and EIP-2612, 4 for Permit2) and its
  secp256k1 signature (coincurve).
- Targets: >= {TARGET_RATIO:.0f}x the eth-account rate and >= {TARGET_RATE:,} signs/s.

| shape | eth-account signs/s | x402pay signs/s | ratio | targets | eth-account encode µs | fast digest µs | sign µs |
|---|---:|---:|---:|---|---:|---:|---:|
{rows}
"""


def main() -> None:
    """Run every shape, print the table, write BENCHMARKS.md (unless ``--no-write``)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=200, help="messages per shape (default 200)")
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds per shape (default 15)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    account: LocalAccount = Account.create()
    results = []
    for shape in SHAPES:
        results.append(bench_shape(shape, account, args.messages, args.rounds))
        print(f"{shape}: {results[-1].eth_account:,.0f} -> {results[-1].fast:,.0f} signs/s ({results[-1].ratio:.1f}x)")
    section = report(results, args.messages, args.rounds)
    print(section)
    if not args.no_write:
        write_section("signing", section)


if __name__ == "__main__":
    main()
