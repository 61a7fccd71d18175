"""Files written whole or not at all: a temporary file beside the destination, synced, renamed onto it.

Every file the library writes for a user (bundles, EPCIS documents, checkpoints, proofs, a witness's
state) goes through `replacing`: a failure, an interruption or a full disk never leaves half a file,
and the old file stays as it was until the new one is complete. A new file gets mode 0666 less the
umask (as `open` would give it); a replaced one keeps its mode.

Only a regular file is replaced. What the user names when it is not one is written as it is: a device
(`/dev/null`), a pipe or a terminal (`/dev/stdout`) gets the bytes as they come, since there is no file
to swap in (and replacing it would turn a device into a file); a symbolic link to a regular file
replaces the file it names and stays a link.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ledger.errors import BadInput

TEMP_ATTEMPTS = 100  # names tried for the temporary file (48 random bits each)


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[BinaryIO]:
    """A new file beside `path`, renamed onto it when the block ends without error, removed otherwise.

    Synced before the rename, and the directory after it, so the new content survives a crash once the
    block has ended. Raises `BadInput` for a directory, a missing parent directory or a failed write.
    A `path` that leads to something other than a regular file is written in place (see above).
    """
    try:
        found = path.stat()  # through symbolic links: what the name leads to
    except FileNotFoundError:
        found = None
    except OSError as e:
        raise BadInput(f"cannot write {path}: {e.strerror or e}") from e
    if found is not None and stat.S_ISDIR(found.st_mode):
        raise BadInput(f"{path} is a directory")
    if found is not None and not stat.S_ISREG(found.st_mode):
        with _in_place(path) as out:
            yield out
        return
    if path.is_symlink():
        path = Path(os.path.realpath(path))  # replace the file the link names; the link stays
    parent = path.parent
    if not parent.is_dir():
        raise BadInput(f"cannot write {path}: no directory {parent}")
    try:
        mode: int | None = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        mode = None
    except OSError as e:
        raise BadInput(f"cannot write {path}: {e.strerror}") from e
    temp, fd = _create_beside(path)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            if mode is not None:
                os.fchmod(out.fileno(), mode)
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            temp.unlink()
        if isinstance(e, OSError):
            raise BadInput(f"cannot write {path}: {e.strerror or e}") from e
        raise
    _sync_directory(parent)


@contextlib.contextmanager
def _in_place(path: Path) -> Iterator[BinaryIO]:
    """`path` opened for writing as it is (a device, a pipe, a terminal): not created, not truncated."""
    try:
        fd = os.open(path, os.O_WRONLY | getattr(os, "O_NOCTTY", 0))
    except OSError as e:
        raise BadInput(f"cannot write {path}: {e.strerror or e}") from e
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
    except OSError as e:
        raise BadInput(f"cannot write {path}: {e.strerror or e}") from e


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` all at once (`replacing`)."""
    with replacing(path) as out:
        out.write(data)


def _create_beside(path: Path) -> tuple[Path, int]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(TEMP_ATTEMPTS):
        temp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            return temp, os.open(temp, flags, 0o666)
        except FileExistsError:
            continue
        except OSError as e:
            raise BadInput(f"cannot write {path}: {e.strerror}") from e
    raise BadInput(f"cannot create a temporary file beside {path}")  # pragma: no cover - 100 collisions


def _sync_directory(directory: Path) -> None:
    """Make a rename in `directory` durable (where the system allows opening a directory)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
