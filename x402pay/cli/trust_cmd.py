"""``x402pay trust`` and ``x402pay verify``: origins caught lying, and one settlement checked on chain."""

from __future__ import annotations

import argparse
import re
from typing import TYPE_CHECKING, Any, Final

from x402pay._trust import TrustStore
from x402pay.cli.books_cmd import LEDGER_HELP, existing_ledger
from x402pay.cli.chain import add_timeout, connect, talking_to_chain
from x402pay.cli.common import EXIT_ERROR, EXIT_OK, UsageError, origin_of, parse_usdc
from x402pay.cli.config import setting, state_dir

if TYPE_CHECKING:
    from eth_typing import ChecksumAddress

_TX_HASH: Final = re.compile(r"0x[0-9a-fA-F]{64}")


def register(commands: Any) -> None:
    """Add ``trust`` and ``verify``."""
    trust = commands.add_parser(
        "trust", help="origins caught lying about a payment: list them, or trust one again",
        description="pay never pays an origin caught lying about a payment until a person clears the mark here. "
        "The marks are kept in the trust file and in the ledger.",
    )  # fmt: skip
    trust.add_argument(
        "--trust-file", help="the marks' file (X402PAY_TRUST_FILE; default $XDG_STATE_HOME/x402pay/untrusted.json)"
    )
    trust.add_argument("--ledger", help=LEDGER_HELP)
    trust.add_argument("--json", action="store_true", help="with list: JSON, origin -> reason")
    trust.add_argument("action", choices=["list", "reset"], help="list the marks, or reset (clear) one")
    trust.add_argument("origin", nargs="?", help="with reset: the origin to trust again, scheme://host[:port]")
    trust.set_defaults(run=run_trust)
    verify = commands.add_parser(
        "verify", help="check one settlement transaction on chain",
        description="Check on chain that transaction TX_HASH moved --amount USDC from --payer to --to under a "
        "signed authorization; exit 0 only when it did.",
    )  # fmt: skip
    verify.add_argument("tx_hash", help="the settlement transaction, 0x and 64 hex digits")
    verify.add_argument("--payer", required=True, help="the address that signed the payment")
    verify.add_argument("--to", required=True, help="the address paid")
    verify.add_argument("--amount", required=True, help="the amount in USDC, e.g. 0.01")
    verify.add_argument("--rpc-url", help="the chain's JSON-RPC URL (X402PAY_RPC_URL)")
    verify.add_argument("--asset", help="the token (default: the chain's known USDC)")
    verify.add_argument("--nonce", help="the signed nonce (default: read from the EIP-3009 AuthorizationUsed log)")
    verify.add_argument("--method", choices=["eip3009", "permit2"], default="eip3009", help="how it was signed")
    verify.add_argument("--scheme", choices=["exact", "upto"], default="exact", help="the x402 scheme")
    add_timeout(verify)
    verify.set_defaults(run=run_verify)


def run_trust(args: argparse.Namespace) -> int:
    """List the untrusted origins (of the trust file and of the ledger), or trust one again."""
    path = setting(args, "trust_file", str(state_dir() / "untrusted.json"))
    store = TrustStore(path)
    with existing_ledger(args) as (ledger, _):
        marks = {**store.marks(), **ledger.untrusted()}
        if args.action == "list":
            _print_marks(marks, args.json)
            return EXIT_OK
        if not args.origin:
            raise UsageError("trust reset needs the ORIGIN (scheme://host[:port])")
        origin = origin_of(args.origin)
        if origin not in marks:
            known = ", ".join(sorted(marks)) or "none"
            print(f"{origin} was not marked; nothing changed (marked: {known})")
            return EXIT_OK
        if origin in store.marks():
            store.reset(origin)
        ledger.clear_untrusted(origin)
    print(f"{origin}: trusted again")
    return EXIT_OK


def _print_marks(marks: dict[str, str], as_json: bool) -> None:
    import json

    if as_json:
        print(json.dumps(marks, indent=2, sort_keys=True))
    else:
        print("\n".join(f"{origin}  {reason}" for origin, reason in sorted(marks.items())) or "no untrusted origins")


def run_verify(args: argparse.Namespace) -> int:
    """Verify one settlement; print the verdict; exit 0 only when verified."""
    from x402pay.cli.wallet_cmd import known_usdc
    from x402pay.verify import Claim, verify_claim

    amount = parse_usdc(args.amount, "--amount")
    if not _TX_HASH.fullmatch(args.tx_hash):
        raise UsageError(f"{args.tx_hash[:80]!r} is not a transaction hash (0x and 64 hex digits)")
    payer, pay_to = _address(args.payer, "--payer"), _address(args.to, "--to")
    web3, where = connect(args)
    with talking_to_chain(args, where, "verifying the settlement"):
        chain_id = int(web3.eth.chain_id)
        asset = _address(args.asset or known_usdc(chain_id), "--asset")
        nonce = args.nonce or _used_nonce(web3, args.tx_hash, asset, payer)
        claim = Claim(
            chain_id=chain_id, asset=asset, payer=payer, pay_to=pay_to, scheme=args.scheme, method=args.method,
            signed_amount=amount, nonce=nonce, valid_before=2**63 - 1, claimed_amount=amount, tx_hash=args.tx_hash,
        )  # fmt: skip
        verification = verify_claim(web3, claim)
    detail = f" ({verification.check}: {verification.reason})" if verification.check else ""
    print(f"{verification.verdict}{detail}")
    return EXIT_OK if verification.verified else EXIT_ERROR


def _address(text: str, where: str) -> ChecksumAddress:
    from eth_utils.address import is_address, to_checksum_address

    if not is_address(text):
        raise UsageError(f"{where} {text[:80]!r} is not an address (0x and 40 hex digits)")
    return to_checksum_address(text)


def _used_nonce(web3: Any, tx_hash: str, asset: str, payer: str) -> str:
    from x402pay._protocol.abi import AUTHORIZATION_USED_TOPIC, address_topic

    logs = web3.eth.get_transaction_receipt(tx_hash)["logs"]
    signers = []
    for log in logs:
        topics = [topic.to_0x_hex() for topic in log["topics"]]
        if log["address"].lower() != asset.lower() or topics[:1] != [AUTHORIZATION_USED_TOPIC]:
            continue
        if topics[1] == address_topic(payer):
            return str(topics[2])
        signers.append("0x" + topics[1][-40:])
    if signers:
        raise UsageError(f"--payer {payer} does not match: the transaction's authorization was signed by {signers[0]}")
    raise UsageError("the transaction has no EIP-3009 AuthorizationUsed log of that token; give --nonce (and --method)")
