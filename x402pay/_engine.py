"""What every driver shares: the options, checked when a transport is built, and the effects that are not HTTP.

A driver (`x402pay._transport`, `x402pay._requests`) owns the HTTP effects of a payment program (send, read, close)
and hands every other effect to its `Engine`: `perform` for sync drivers, `aperform` for async ones. The ledger is
called as it is (an `AsyncLedger` awaited natively, a sync `Ledger` in a worker thread from an async driver), the
chain through one RPC client with one timeout, and a signer that is not a local key (KMS, hardware) off the loop.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from functools import partial
from typing import Any, Final, Literal, get_args

import anyio.to_thread

from x402pay._allowance import apermit2_allowance, atoken_nonce, permit2_allowance, token_nonce
from x402pay._books import Books, Callback
from x402pay._effects import (
    Ahead,
    Book,
    ChannelChain,
    ChannelOp,
    Effect,
    Pause,
    Program,
    ReadChain,
    Sign,
    Spawn,
    Verify,
    adrive,
    drive,
)
from x402pay._policy import SpendPolicy
from x402pay._prepay import Prepayments, SharedPrepayments
from x402pay._presign import Presigner
from x402pay._program import PaymentProgram
from x402pay._repeats import Repeats
from x402pay._rpc import async_web3_for, chain_unavailable, web3_for
from x402pay._trust import TrustStore
from x402pay._verifier import Verifier
from x402pay._wallet import Wallet

VerifyMode = Literal["off", "inline", "background"]
_ALLOWANCE: Final = "the Permit2 allowance"
_CHAIN_READS: Final = {"allowance": (permit2_allowance, apermit2_allowance), "nonce": (token_nonce, atoken_nonce)}


@dataclass(frozen=True)
class TransportOptions:
    """How a payment transport behaves beyond its policy (the keyword arguments of every transport), checked when
    it is built.

    - `announce_ceiling`: send ``x-x402-max-amount-wei`` (the policy's cap, or the caller's lower value) so that
      metered servers ask for no more; the paid retry carries the identical value.
    - `keep_receipt_frames`: leave vendor receipt/error frames in streams (by default they are removed, so
      standard SSE parsers such as the OpenAI SDK's see only their own frames).
    - `on_receipt` / `on_verified`: called with the `Payment` when its receipt lands / when it was checked.
    - `rpc_url`: a JSON-RPC endpoint of the payment's chain: the Permit2 allowance is checked before signing, and
      receipts can be verified. `rpc_timeout`: how long one RPC request may take, in seconds.
    - `ledger`: an `x402pay.ledger.Ledger` (or, for an async transport, an `AsyncLedger`): budgets held before
      signing, one signature per ``Idempotency-Key``.
    - `trust`: where origins caught lying are marked (default: in memory).
    - `verify`: ``"off"``, ``"inline"`` (a receipt is checked on chain before the answer or the stream's end
      reaches you; fraud raises `ReceiptMismatch`) or ``"background"`` (checked later; see `on_verified`).
      Needs `rpc_url`. `confirmations`: how deep the settlement must be. `verify_patience`: how many seconds a
      check waits for a just-reported transaction to show (default: five blocks of the payment's chain, at least
      ten seconds); a transaction still missing then is a lie (`ReceiptMismatch`), anything else stays pending.
    - `reconcile_every`: with a `Ledger` and `rpc_url`, reconcile the ledger with the chain every so many seconds
      on a background thread (`Ledger.watch`), so a long-running bot's claims are settled, and lies caught, even
      without verification; stopped when the transport closes.
    - `clock`: the time source for authorization windows.
    - `prepay`: pay on the first request to a route this transport paid recently (one round trip instead of two;
      see `x402pay._prepay`). `prepay_ttl`: how many seconds a route's challenge stays usable for that.
      `presign` (needs `prepay`): while a pre-paid request is in flight, reserve and sign the route's next payment,
      so that the next request only sends it (see `x402pay._presign`); unused ones are released on close.
    - `retry_window`: for how many seconds a request without an ``Idempotency-Key`` that repeats an earlier one
      (same method, URL and body; an SDK's retry, or a retry by hand after a lost answer) is the same logical
      request, and re-sends its payment rather than signing again (see `x402pay._repeats`); 0 turns it off.
    """

    announce_ceiling: bool = True
    keep_receipt_frames: bool = False
    on_receipt: Callback | None = None
    on_verified: Callback | None = None
    rpc_url: str | None = None
    rpc_timeout: float = 5.0
    ledger: Any = None
    trust: TrustStore | None = None
    verify: VerifyMode = "off"
    confirmations: int = 0
    verify_patience: float | None = None
    reconcile_every: float | None = None
    clock: Callable[[], float] = time.time
    prepay: bool = False
    prepay_ttl: float = 300.0
    presign: bool = False
    retry_window: float = 60.0

    def __post_init__(self) -> None:
        for name in ("announce_ceiling", "keep_receipt_frames", "prepay", "presign"):
            _check(name, getattr(self, name), isinstance(getattr(self, name), bool), "True or False")
        for name in ("on_receipt", "on_verified", "clock"):
            value = getattr(self, name)
            _check(name, value, (value is None and name != "clock") or callable(value), "a callable")
        for name in ("rpc_timeout", "verify_patience", "prepay_ttl", "reconcile_every", "retry_window"):
            value = getattr(self, name)
            if value is None and name in ("verify_patience", "reconcile_every"):
                continue
            _check(name, value, _is_number(value), "a number of seconds")
            _check_range(
                name,
                value,
                value > 0 or (value == 0 and name in ("verify_patience", "prepay_ttl", "retry_window")),
                "out of range",
            )
        _check_range("presign", self.presign, self.prepay or not self.presign, "only meaningful with prepay=True")
        _check("confirmations", self.confirmations, _is_int(self.confirmations), "an int")
        _check_range("confirmations", self.confirmations, self.confirmations >= 0, "negative")
        _check_range("verify", self.verify, self.verify in get_args(VerifyMode), f"not one of {get_args(VerifyMode)}")
        _check("rpc_url", self.rpc_url, self.rpc_url is None or isinstance(self.rpc_url, str), "a URL string")
        _check("trust", self.trust, self.trust is None or isinstance(self.trust, TrustStore), "a TrustStore")
        _check("ledger", self.ledger, self.ledger is None or callable(getattr(self.ledger, "reserve", None)),
               "an x402pay.ledger.Ledger or AsyncLedger")  # fmt: skip
        if self.verify != "off" and self.rpc_url is None:
            raise ValueError(f"verify={self.verify!r} needs rpc_url: the chain to check receipts on")
        if self.reconcile_every is not None and (self.rpc_url is None or self.ledger is None):
            raise ValueError("reconcile_every needs a ledger to reconcile and rpc_url: the chain to read")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check(name: str, value: object, ok: bool, expected: str) -> None:
    if not ok:
        raise TypeError(f"{name} must be {expected}, not {value!r}"[:300])


def _check_range(name: str, value: object, ok: bool, problem: str) -> None:
    if not ok:
        raise ValueError(f"{name}={value!r} is {problem}"[:300])


def options_of(given: dict[str, Any]) -> TransportOptions:
    """`TransportOptions` from a transport's keyword arguments; an unknown name is a TypeError listing the known."""
    known = {field.name for field in fields(TransportOptions)}
    unknown = sorted(set(given) - known)
    if unknown:
        raise TypeError(f"unknown transport option(s) {unknown}; known: {sorted(known)}")
    return TransportOptions(**given)


def wallet_of(wallet: object) -> Wallet:
    """A `Wallet`, or one made from an eth-account signer (`BaseAccount`)."""
    if isinstance(wallet, Wallet):
        return wallet
    return Wallet(wallet)  # type: ignore[arg-type]  # Wallet raises WalletError for anything not a BaseAccount


class Engine:
    """One transport's configuration, its payment program, and how the non-HTTP effects are carried out."""

    def __init__(self, *, wallet: object, policy: object, options: dict[str, Any], asynchronous: bool) -> None:
        if not isinstance(policy, SpendPolicy):
            raise TypeError(f"policy must be an x402pay.SpendPolicy, not {type(policy).__name__}")
        self.wallet = wallet_of(wallet)
        self.policy = policy
        self.options = opts = options_of(options)
        self.ledger = opts.ledger
        self._async_ledger = inspect.iscoroutinefunction(getattr(opts.ledger, "reserve", None))
        if self._async_ledger and not asynchronous:
            raise TypeError("ledger: a sync transport needs a Ledger, not an AsyncLedger (that is for async ones)")
        background = opts.verify == "background" and not asynchronous
        self.verifier = (
            None if opts.verify == "off" or opts.rpc_url is None
            else Verifier(opts.rpc_url, background=background, confirmations=opts.confirmations,
                          patience=opts.verify_patience, rpc_timeout=opts.rpc_timeout)
        )  # fmt: skip
        trust = opts.trust if opts.trust is not None else TrustStore()
        books = Books(ledger=opts.ledger is not None, trust=trust, verify=opts.verify, on_receipt=opts.on_receipt,
                      on_verified=opts.on_verified)  # fmt: skip
        prepayments = SharedPrepayments(Prepayments(opts.prepay_ttl), books, opts.clock) if opts.prepay else None
        self.presigner = None if prepayments is None or not opts.presign else Presigner(
            books=books, wallet=self.wallet, policy=policy, prepayments=prepayments, clock=opts.clock,
            reads_chain=opts.rpc_url is not None,
        )  # fmt: skip
        self.program = PaymentProgram(
            wallet=self.wallet, policy=policy, books=books, prepayments=prepayments,
            repeats=Repeats(opts.retry_window, time.monotonic), clock=opts.clock,
            announce_ceiling=opts.announce_ceiling, keep_receipt_frames=opts.keep_receipt_frames,
            reads_chain=opts.rpc_url is not None, uncovered=getattr(opts.ledger, "uncovered", None),
            presigner=self.presigner,
        )  # fmt: skip
        self._web3: Any = None
        self._sync_web3_client: Any = None
        self._channels: Any = None
        self._lock = threading.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._watcher = self._watch(opts) if opts.reconcile_every is not None else None
        self._side: ThreadPoolExecutor | None = None  # runs a sync transport's `Ahead` programs

    def __repr__(self) -> str:
        return f"wallet={self.wallet.address} max_per_request={self.policy.max_per_request}"

    def perform(self, effect: Effect) -> Any:
        """Carry out a non-HTTP effect, synchronously."""
        if isinstance(effect, Sign):
            return effect.work()
        if isinstance(effect, Book):
            return getattr(self.ledger, effect.operation)(*effect.args, **effect.kwargs)
        if isinstance(effect, ReadChain):
            return self._read_chain(effect.what, effect.token)
        if isinstance(effect, Verify):
            return self._verifier().check(effect.payment)
        if isinstance(effect, Spawn):
            return self._verifier().submit(partial(drive, effect.program, self.perform))
        if isinstance(effect, Ahead):
            self._side_pool().submit(drive, effect.program, self.perform)
            return None
        if isinstance(effect, Pause):
            return time.sleep(effect.seconds)
        if isinstance(effect, ChannelOp):
            return getattr(self.channels, effect.operation)(*effect.args, **effect.kwargs)
        if isinstance(effect, ChannelChain):
            return self._channel_chain(effect)
        raise TypeError(f"not an effect a driver knows: {effect!r}")

    async def aperform(self, effect: Effect) -> Any:
        """Carry out a non-HTTP effect for an async driver, off the event loop where it would block it."""
        if isinstance(effect, Sign):
            return effect.work() if self.wallet.signs_locally else await anyio.to_thread.run_sync(effect.work)
        if isinstance(effect, Book):
            call = partial(getattr(self.ledger, effect.operation), *effect.args, **effect.kwargs)
            return await call() if self._async_ledger else await anyio.to_thread.run_sync(call)
        if isinstance(effect, ReadChain):
            return await self._aread_chain(effect.what, effect.token)
        if isinstance(effect, Verify):
            return await anyio.to_thread.run_sync(self._verifier().check, effect.payment)
        if isinstance(effect, Spawn | Ahead):
            return self.start_task(effect.program)
        if isinstance(effect, Pause):
            return await asyncio.sleep(effect.seconds)
        if isinstance(effect, ChannelOp):
            call = partial(getattr(self.channels, effect.operation), *effect.args, **effect.kwargs)
            return await call() if self._async_ledger else await anyio.to_thread.run_sync(call)
        if isinstance(effect, ChannelChain):
            return await anyio.to_thread.run_sync(self._channel_chain, effect)
        raise TypeError(f"not an effect a driver knows: {effect!r}")

    def start_task(self, program: Program[None]) -> None:
        """Run `program` as a task of the running event loop (awaited by `aclose`)."""
        task = asyncio.get_running_loop().create_task(adrive(program, self.aperform))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _watch(self, opts: TransportOptions) -> Any:
        """Reconcile the ledger every `reconcile_every` seconds (a sync `Ledger` only: the watch is a thread)."""
        if self._async_ledger:
            raise TypeError("reconcile_every needs a Ledger; with an AsyncLedger, run its reconcile() in a task")
        from x402pay.ledger import Web3Chain

        rpc_url, timeout = str(opts.rpc_url), opts.rpc_timeout
        return self.ledger.watch(lambda: Web3Chain(web3_for(rpc_url, timeout=timeout)), every=opts.reconcile_every)

    def close(self) -> None:
        """Finish background verifications and work started ahead, release payments signed ahead, and stop the
        reconcile watch."""
        if self._side is not None:
            self._side.shutdown(wait=True)
        if self.presigner is not None:
            drive(self.presigner.close(), self.perform)
        if self.verifier is not None:
            self.verifier.close()
        if self._watcher is not None:
            self._watcher.stop()

    async def aclose(self) -> None:
        """Finish background verifications and close the async RPC client."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.presigner is not None:
            await adrive(self.presigner.close(), self.aperform)
        if self._web3 is not None:
            await self._web3.provider.disconnect()
        self.close()

    def _side_pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._side is None:
                self._side = ThreadPoolExecutor(max_workers=1, thread_name_prefix="x402pay-ahead")
            return self._side

    def _verifier(self) -> Verifier:
        if self.verifier is None:
            raise RuntimeError("verification effect without a verifier")
        return self.verifier

    @property
    def channels(self) -> Any:
        """The payment channels: the ledger's (`Ledger.channels`, or `AsyncLedger.channels`, awaited), else a private
        in-memory book made on first use."""
        with self._lock:
            if self._channels is None:
                from x402pay.ledger._channels import ChannelBook

                ledger_channels = getattr(self.ledger, "channels", None)
                self._channels = ledger_channels or ChannelBook.in_memory(self.options.clock)
            return self._channels

    def _channel_chain(self, effect: ChannelChain) -> Any:
        """Carry out a `ChannelChain` effect over the sync RPC client; RPC failures as `ChainUnavailable`."""
        from x402pay import _channel_chain

        web3 = self._sync_web3()
        if effect.operation == "read":
            try:
                return _channel_chain.read_channel(web3, *effect.args)
            except Exception as exc:  # the RPC library's own errors
                raise chain_unavailable(exc, "the channel's state") from exc
        return getattr(_channel_chain, effect.operation)(web3, self.wallet, *effect.args)

    def _sync_web3(self) -> Any:
        with self._lock:
            if self._sync_web3_client is None:
                self._sync_web3_client = web3_for(str(self.options.rpc_url), timeout=self.options.rpc_timeout)
            return self._sync_web3_client

    def _read_chain(self, what: str, token: str) -> int:
        """The wallet's `what` (see `ReadChain`) of `token`; RPC failures as `ChainUnavailable`."""
        try:
            return int(_CHAIN_READS[what][0](self._web3_client(asynchronous=False), token, self.wallet.address))
        except Exception as exc:  # the RPC library's own errors: requests, web3, an answer that is not a number
            raise chain_unavailable(exc, _ALLOWANCE) from exc

    async def _aread_chain(self, what: str, token: str) -> int:
        """The async `_read_chain`."""
        try:
            return int(await _CHAIN_READS[what][1](self._web3_client(asynchronous=True), token, self.wallet.address))
        except Exception as exc:  # the RPC library's own errors: aiohttp, web3, an answer that is not a number
            raise chain_unavailable(exc, _ALLOWANCE) from exc

    def _web3_client(self, asynchronous: bool) -> Any:
        with self._lock:
            if self._web3 is None:
                rpc_url, timeout = str(self.options.rpc_url), self.options.rpc_timeout
                self._web3 = (async_web3_for if asynchronous else web3_for)(rpc_url, timeout=timeout)
            return self._web3
