"""Files written whole or not at all (`ledger.files`): the one atomic-write helper."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ledger import files
from ledger.errors import BadInput


def test_a_failure_inside_the_block_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), files.replacing(target) as out:
        out.write(b"half")
        raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_a_new_file_gets_the_umask_and_a_replaced_one_keeps_its_mode(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        files.write_atomic(tmp_path / "new", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o640
    (tmp_path / "kept").write_bytes(b"")
    os.chmod(tmp_path / "kept", 0o600)
    files.write_atomic(tmp_path / "kept", b"y")
    assert (tmp_path / "kept").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "kept").read_bytes() == b"y"


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="is a directory"):
        files.write_atomic(tmp_path, b"x")
