"""The package as a pip user gets it: the sdist and wheel built from this checkout, in fresh virtual environments.

Without extras, and with ``[server]``: every command's ``--help``; the one line a command without its extra prints;
the README's install commands that run offline; a paid ``x402pay pay`` against ``x402pay serve-demo`` on the
session's devnet; a user's own pytest project on the x402pay fixtures, which passes with anvil and, without it,
skips (fails under CI). Dependencies come from the package index, through pip's cache.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import x402pay
from x402pay.testing import Anvil, Devnet, find_anvil

pytestmark = pytest.mark.chain

ROOT = Path(__file__).resolve().parents[2]
DIST_INFO = f"x402pay-{x402pay.__version__}.dist-info"
#: A sub-command in argparse's help: four spaces, then its name alone or before its help.
COMMAND_LINE = re.compile(r"^ {4}([a-z][a-z0-9-]*)(?: {2}|$)")

USER_TESTS = """
def test_a_payer_holds_test_usdc(x402pay_chain):
    usdc = x402pay_chain.contract("TestUSDC", x402pay_chain.usdc)
    assert usdc.functions.balanceOf(x402pay_chain.payers[0].address).call() == 1_000_000_000


def test_the_devnet_has_its_contracts(x402pay_devnet, x402pay_web3):
    assert len(x402pay_web3.eth.get_code(x402pay_devnet.permit2)) > 100
"""


@dataclass(frozen=True)
class Venv:
    """A fresh virtual environment with x402pay installed from the wheel."""

    root: Path

    def bin(self, name: str) -> str:
        return str(self.root / "bin" / name)

    def run(self, *argv: str, env: dict[str, str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run one of the venv's programs (``x402pay``, ``python``) as a user would."""
        command = [self.bin(argv[0]), *argv[1:]]
        return subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout, check=False)


def checked(command: list[str], timeout: float = 600) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"{shlex.join(command)}\n{result.stdout}\n{result.stderr}"


def user_env(home: Path, venv: Venv, **extra: str) -> dict[str, str]:
    """A user's environment: the venv's bin first, no x402pay settings, CI or pytest state of this run, its own HOME."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("X402PAY_", "PYTEST_")) and name not in {"CI", "VIRTUAL_ENV", "PYTHONPATH"}
    }
    env.update(HOME=str(home), PATH=f"{venv.root / 'bin'}{os.pathsep}{env.get('PATH', '')}", **extra)
    return env


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    checked([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)])  # the sdist, then the wheel from it
    return out


@pytest.fixture(scope="module")
def wheel(dist: Path) -> Path:
    (found,) = dist.glob("x402pay-*.whl")
    return found


def install(root: Path, requirement: str) -> Venv:
    checked([sys.executable, "-m", "venv", str(root)])
    venv = Venv(root)
    checked([venv.bin("python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", requirement])
    return venv


@pytest.fixture(scope="module")
def core(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Venv:
    """``pip install x402pay``: no extras."""
    return install(tmp_path_factory.mktemp("venv-core"), str(wheel))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Venv:
    """``pip install 'x402pay[server]'``."""
    return install(tmp_path_factory.mktemp("venv-server"), f"x402pay[server] @ {wheel.as_uri()}")


@pytest.fixture(scope="module")
def anvil_binary(x402pay_anvil: Anvil) -> str:
    """The anvil this suite runs on (the fixture skips, or fails under CI, without one)."""
    return find_anvil()


def test_the_wheel_ships_types_contracts_entry_points_and_the_license(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(f"{DIST_INFO}/METADATA").decode()
        entry_points = archive.read(f"{DIST_INFO}/entry_points.txt").decode()
    artifacts = {
        f"x402pay/testing/artifacts/{path.name}" for path in (ROOT / "x402pay/testing/artifacts").glob("*.json")
    }
    assert artifacts
    assert artifacts <= names
    assert "x402pay/py.typed" in names
    assert f"{DIST_INFO}/licenses/LICENSE" in names
    assert "License-Expression: MIT" in metadata.splitlines()
    assert "Classifier: Typing :: Typed" in metadata.splitlines()
    assert "x402pay = x402pay.cli:main" in entry_points
    assert "x402pay = x402pay.testing.pytest_plugin" in entry_points


def test_the_readme_on_the_index_page_links_only_to_absolute_urls_and_shipped_documents(
    wheel: Path, dist: Path
) -> None:
    with zipfile.ZipFile(wheel) as archive:
        description = archive.read(f"{DIST_INFO}/METADATA").decode().split("\n\n", 1)[1]
    assert "## Install" in description
    links = re.findall(r"\]\(([^)\s]+)\)", description)
    assert links
    assert [link for link in links if not link.startswith("https://")] == []
    (sdist,) = dist.glob("x402pay-*.tar.gz")
    with tarfile.open(sdist) as archive:
        shipped = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    named = set(re.findall(r"`((?:docs/)?[\w-]+\.md)`", description.split("## More", 1)[1]))
    assert named == {"docs/how-it-works.md", "SECURITY.md", "BENCHMARKS.md"}
    assert named | {"LICENSE"} <= shipped


def subcommands(help_text: str) -> list[str]:
    return [match[1] for line in help_text.splitlines() if (match := COMMAND_LINE.match(line))]


@pytest.mark.parametrize("installed", ["core", "server"])
def test_every_command_and_sub_command_answers_help(
    installed: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    venv: Venv = request.getfixturevalue(installed)
    env = user_env(tmp_path, venv)
    pending: list[list[str]] = [[]]
    answered: list[str] = []
    while pending:
        command = pending.pop()
        result = venv.run("x402pay", *command, "--help", env=env, cwd=tmp_path)
        assert result.returncode == 0, f"x402pay {' '.join(command)} --help\n{result.stderr}"
        assert result.stdout.startswith("usage: x402pay")
        answered.append(" ".join(command))
        pending += [[*command, name] for name in subcommands(result.stdout)]
    assert {"demo", "devnet", "serve-demo", "pay", "wallet", "wallet new"} <= set(answered)


@pytest.mark.parametrize(("command", "extra"), [("serve-demo", "server"), ("demo", "demo")])
def test_a_command_without_its_extra_says_which_to_install_in_one_line(
    core: Venv, tmp_path: Path, command: str, extra: str
) -> None:
    result = core.run("x402pay", command, env=user_env(tmp_path, core), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.rstrip().endswith(f"pip install 'x402pay[{extra}]'")


def install_section_commands() -> list[list[str]]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Install\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for block in re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL) for line in block.splitlines()]
    return [shlex.split(line, comments=True) for line in lines if line.strip()]


def test_the_readme_install_commands(core: Venv, wheel: Path, anvil_binary: str, tmp_path: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(f"{DIST_INFO}/METADATA").decode().split("\n\n", 1)[0]
    provided = {line.split(": ", 1)[1] for line in metadata.splitlines() if line.startswith("Provides-Extra: ")}
    env = user_env(tmp_path, core, X402PAY_ANVIL=anvil_binary)
    ran = []
    for command in install_section_commands():
        if command[:2] == ["pip", "install"]:  # what the fixtures did from the wheel; here: the extras exist
            extras = re.findall(r"\[(\w+)\]", command[2])
            assert set(extras) <= provided, command
        elif command[:2] == ["npm", "install"]:  # needs npm's registry; this checkout's node_modules stands in
            assert command[-1] == "@foundry-rs/anvil"
        else:
            result = core.run(*command, env=env, cwd=tmp_path)
            assert result.returncode == 0, f"{shlex.join(command)}\n{result.stderr}"
            ran.append(result.stdout)
    assert ran == [f"x402pay {x402pay.__version__}\n", f"{anvil_binary}\n"]


def read_listening_url(process: subprocess.Popen[str], seconds: float = 60) -> str:
    assert process.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        if "Uvicorn running on " in line:
            return line.split("Uvicorn running on ")[1].split()[0]
    pytest.fail(f"serve-demo never said where it listens: {''.join(seen)}")


@pytest.fixture
def serve_demo(server: Venv, x402pay_chain: Devnet, tmp_path: Path) -> Iterator[str]:
    """``x402pay serve-demo`` from the [server] venv, settling on the session's devnet; its URL."""
    command = [
        server.bin("x402pay"), "serve-demo", "--rpc-url", x402pay_chain.rpc_url,
        "--facilitator-key", "0x" + x402pay_chain.facilitator.key.hex(), "--asset", x402pay_chain.usdc,
        "--pay-to", x402pay_chain.payee.address, "--port", "0",
    ]  # fmt: skip
    env = user_env(tmp_path, server)
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path
    )
    try:
        yield read_listening_url(process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_a_paid_request_with_the_cli_against_serve_demo(
    server: Venv, serve_demo: str, x402pay_chain: Devnet, tmp_path: Path
) -> None:
    usdc = x402pay_chain.contract("TestUSDC", x402pay_chain.usdc)
    before = usdc.functions.balanceOf(x402pay_chain.payee.address).call()
    env = user_env(tmp_path, server, X402PAY_PRIVATE_KEY="0x" + x402pay_chain.payers[0].key.hex())
    result = server.run("x402pay", "pay", serve_demo + "/v1/fortune", "--max", "0.05", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "fortune" in json.loads(result.stdout)
    assert "exact payment settled" in result.stderr
    assert "charged 0.010000" in result.stderr
    assert usdc.functions.balanceOf(x402pay_chain.payee.address).call() - before == 10_000


@pytest.fixture(scope="module")
def user_venv(core: Venv) -> Venv:
    """The venv without extras, with pytest installed beside x402pay as a user's project would have it."""
    checked([core.bin("python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "pytest"])
    return core


@pytest.fixture
def user_project(tmp_path: Path) -> Path:
    """A user's project whose tests use the x402pay fixtures."""
    project = tmp_path / "project"
    (project / "tests").mkdir(parents=True)
    (project / "pyproject.toml").write_text('[tool.pytest.ini_options]\ntestpaths = ["tests"]\n')
    (project / "tests" / "test_paid.py").write_text(USER_TESTS)
    return project


def run_user_tests(core: Venv, project: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = user_env(project.parent, core, **env)
    environment["PATH"] = str(core.root / "bin")  # no anvil on PATH: only what the test passes in X402PAY_ANVIL
    return core.run("python", "-m", "pytest", "-rs", "-p", "no:cacheprovider", env=environment, cwd=project)


def test_a_user_project_passes_on_the_fixtures_with_anvil(
    user_venv: Venv, user_project: Path, anvil_binary: str
) -> None:
    result = run_user_tests(user_venv, user_project, X402PAY_ANVIL=anvil_binary)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_a_user_project_without_anvil_skips_saying_what_to_install(user_venv: Venv, user_project: Path) -> None:
    result = run_user_tests(user_venv, user_project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 skipped" in result.stdout
    assert "needs anvil: anvil was not found; install it with" in result.stdout
    assert "npm install @foundry-rs/anvil" in result.stdout
    assert "in the x402pay checkout" not in result.stdout  # a pip user has none


def test_a_user_project_without_anvil_fails_under_ci(user_venv: Venv, user_project: Path) -> None:
    result = run_user_tests(user_venv, user_project, CI="true")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "a chain test needs anvil: anvil was not found" in result.stdout
    assert "2 error" in result.stdout
    assert "During handling" not in result.stdout  # the reason alone, not a chained traceback
