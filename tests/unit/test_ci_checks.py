"""`.ci/run` enforces the lint, the house layout and the types before any test runs (issue 14 item 7)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _project_copy(tmp_path: Path) -> Path:
    """The project's sources, tests and CI script in a scratch folder, sharing the real virtualenv."""
    stamp = ROOT / ".venv" / ".custody-installed"
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if not stamp.exists() or stamp.read_text().strip() != wanted:  # else the copy's .ci/run would reinstall it
        pytest.skip("needs the .venv that .ci/run made for this pyproject.toml")
    copy = tmp_path / "project"
    copy.mkdir()
    for name in ("ledger", "commands", "tests", ".ci"):
        shutil.copytree(ROOT / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    (copy / ".venv").symlink_to(ROOT / ".venv")
    if (ROOT / ".mypy_cache").is_dir():
        shutil.copytree(ROOT / ".mypy_cache", copy / ".mypy_cache")
    return copy


def _run(copy: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CUSTODY_TEST_PG": "", "CI": ""}
    return subprocess.run(["bash", str(copy / ".ci" / "run"), "--co", "-q"], cwd=copy, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("name, source, says", [
    ("lint", "import os\n", "ruff check failed"),  # an unused import
    ("layout", "def f(x: int) -> int:\n    return x*2 +1\n", "ruff check failed"),  # E225/E226
    ("types", "def f(x: int) -> str:\n    return x\n", "mypy --strict failed"),
])
def test_ci_fails_on_lint_layout_and_types_before_the_tests(tmp_path: Path, name: str, source: str,
                                                            says: str) -> None:
    copy = _project_copy(tmp_path)
    (copy / "ledger" / f"_probe_{name}.py").write_text(f'"""A probe."""\n\n\n{source}')
    done = _run(copy)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert says in done.stderr and f"_probe_{name}.py" in done.stdout + done.stderr
    assert "tests collected" not in done.stdout  # stopped before pytest
