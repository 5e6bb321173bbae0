"""Every Python example in the README type-checks under ``mypy --strict``, as a careful user's code would.

tests/integration/test_readme.py runs the same examples on the devnet; here they are only read, by one mypy run over
all of them, with the project's mypy configuration (its pydantic plugin, its Python version).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.DOTALL)


def test_every_readme_example_type_checks_strictly(tmp_path: Path) -> None:
    files = []
    for index, example in enumerate(EXAMPLES, start=1):
        path = tmp_path / f"readme_example_{index}.py"
        path.write_text(example)
        files.append(str(path))
    command = [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", *files]
    checked = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert (checked.returncode, checked.stdout + checked.stderr) == (0, "")
    assert len(files) >= 6
