"""The pytest plugin costs a project next to nothing until a chain fixture is used, and brings its own marker.

Installing x402pay loads `x402pay.testing.pytest_plugin` into every pytest session of every project; what it costs
in time is measured in bench/bench_plugin.py. Here, the facts behind that figure: loading it imports neither web3
nor the rest of the payment stack, and ``@pytest.mark.chain`` works under ``--strict-markers`` in any project.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

#: What a session that uses no chain fixture must not load.
HEAVY = ("web3", "eth_account", "eth_abi", "pydantic", "httpx", "coincurve")


def test_loading_the_plugin_imports_no_heavy_library() -> None:
    probe = f"import sys, x402pay.testing.pytest_plugin; print(sorted(set({HEAVY!r}) & set(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def test_the_public_names_of_the_kit_still_import_on_first_use() -> None:
    probe = "import sys, x402pay.testing as kit; kit.Devnet, kit.ANVIL_MNEMONIC; print('web3' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "True"


def test_the_chain_marker_is_registered_in_any_project(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.chain
        def test_marked():
            pass
        """
    )
    others = ("-p", "no:cacheprovider", "-p", "no:asyncio")  # only x402pay's plugin matters here
    pytester.runpytest("--strict-markers", *others).assert_outcomes(passed=1)
    assert "chain: needs a local anvil chain" in pytester.runpytest("--markers", *others).stdout.str()
