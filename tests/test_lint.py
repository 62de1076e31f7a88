"""The whole tree is `ruff` clean, as `make lint` checks: lint rules and formatting alike.

CI runs `make test`, not `make lint`; this test is what keeps a change that skipped the linter
from landing green. The Python blocks in README.md and docs/ are formatted too (ruff reads them).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("ruff") is None, reason="ruff is not installed (the dev extra)"
)


@pytest.mark.parametrize("args", [["check", "."], ["format", "--check", "."]])
def test_tree_is_ruff_clean(args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, f"`ruff {' '.join(args)}` failed; run `make lint`:\n{done.stdout}"
