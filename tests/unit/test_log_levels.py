"""Library code logs nothing above INFO (DESIGN's house style, after urllib3): a failure a caller must see is raised,
and the rest is for those who turn the logger up. The command line is the one place that speaks to people."""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "x402pay"
ABOVE_INFO = re.compile(
    r"\blog(?:ger)?\.(?:warning|warn|error|exception|critical|fatal)\(|logging\.(?:WARNING|ERROR|CRITICAL)\b"
)


def test_no_library_module_logs_above_info() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{number}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if "cli" not in path.relative_to(PACKAGE).parts
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if ABOVE_INFO.search(line)
    ]
    assert offenders == []
