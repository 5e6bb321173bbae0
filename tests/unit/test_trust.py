"""TrustStore: marks on origins that lied; a file that cannot be read fails closed, never open."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from x402pay import PaymentTransport, SpendPolicy, TrustStore, TrustStoreError, Wallet
from x402pay.cli import main


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"\xff\xfe garbage", b"[]", b'"marks"', b'{"https://a.example": "no reason object"}'],
    ids=["not-json", "not-utf8", "a-list", "a-string", "not-marks"],
)
def test_an_unreadable_trust_file_refuses_every_check_and_is_never_overwritten(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "untrusted.json"
    path.write_bytes(content)
    store = TrustStore(path)
    with pytest.raises(TrustStoreError, match=r"untrusted\.json"):
        store.reason("https://honest.example")
    with pytest.raises(TrustStoreError):
        store.mark("https://liar.example", "lied")
    assert path.read_bytes() == content  # what a person must look at is left as it was


def test_a_transport_with_an_unreadable_trust_file_signs_nothing(tmp_path: Path) -> None:
    path = tmp_path / "untrusted.json"
    path.write_text("{broken")
    asked: list[httpx.Request] = []

    def peer(request: httpx.Request) -> httpx.Response:
        asked.append(request)
        required = "eyJ4NDAyVmVyc2lvbiI6MiwiYWNjZXB0cyI6W119"  # {"x402Version":2,"accepts":[]}
        return httpx.Response(402, headers={"PAYMENT-REQUIRED": required})

    transport = PaymentTransport(
        wallet=Wallet.from_key("0x" + "44" * 32), policy=SpendPolicy(max_per_request=1),
        inner=httpx.MockTransport(peer), trust=TrustStore(path),
    )  # fmt: skip
    with httpx.Client(transport=transport) as http, pytest.raises(TrustStoreError):
        http.get("https://paid.example/data")
    assert all("PAYMENT-SIGNATURE" not in request.headers for request in asked)


def test_the_cli_reports_an_unreadable_trust_file_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "untrusted.json"
    path.write_text("{broken")
    assert main(["trust", "--trust-file", str(path), "list"]) != 0
    err = capsys.readouterr().err
    assert "untrusted.json cannot be read" in err
    assert "Traceback" not in err


def test_the_cli_lists_and_clears_the_marks_a_ledger_keeps_for_its_fleet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from x402pay.ledger import Ledger

    path = tmp_path / "spend.db"
    with Ledger.sqlite(path) as ledger:
        ledger.mark_untrusted("https://liar.example", "claimed a settlement that never happened")
    trust_file = str(tmp_path / "untrusted.json")
    assert main(["trust", "--trust-file", trust_file, "--ledger", str(path), "list"]) == 0
    assert "https://liar.example  claimed a settlement that never happened" in capsys.readouterr().out
    assert main(["trust", "--trust-file", trust_file, "--ledger", str(path), "reset", "https://liar.example"]) == 0
    assert "trusted again" in capsys.readouterr().out
    with Ledger.sqlite(path) as ledger:
        assert ledger.untrusted() == {}


WITHOUT_FCNTL = """
import sys

sys.modules["fcntl"] = None  # what Windows looks like to `import fcntl`
import x402pay, x402pay.cli, x402pay.ledger, x402pay.testing, x402pay.verify

memory = x402pay.TrustStore()
memory.mark("https://liar.example", "lied")
assert memory.reason("https://liar.example") == "lied"
shared = x402pay.TrustStore(sys.argv[1])
assert shared.reason("https://honest.example") is None  # a check takes no lock
try:
    shared.mark("https://liar.example", "lied")
except x402pay.TrustStoreError as exc:
    print(exc)
"""


def test_x402pay_imports_without_fcntl_and_a_shared_trust_file_then_fails_typed_on_use(tmp_path: Path) -> None:
    path = tmp_path / "untrusted.json"
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_FCNTL, str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "this Python has no fcntl" in result.stdout
    assert "TrustStore() without a path" in result.stdout
    assert not path.exists()


def test_a_shared_trust_file_is_marked_and_cleared_under_its_lock(tmp_path: Path) -> None:
    path = tmp_path / "state" / "untrusted.json"
    TrustStore(path).mark("https://liar.example", "lied")
    assert TrustStore(path).marks() == {"https://liar.example": "lied"}
    assert TrustStore(path).reset("https://liar.example")
    assert TrustStore(path).marks() == {}
