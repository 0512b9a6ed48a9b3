"""The plugin is `mypy --strict` clean (pyproject [tool.mypy]): checked with the suite, so in CI."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO


def test_mypy_strict_is_clean() -> None:
    proc = subprocess.run([sys.executable, "-m", "mypy"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
