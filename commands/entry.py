"""The `custody` program's entry point: Ctrl-C is ours from its first line.

Loading the command line's modules takes a few tenths of a second, before `commands.main.run` can set how
an interrupt is handled; Python's own handler would print a KeyboardInterrupt traceback from inside an
import. Until then an interrupt ends the program at once with the one line and the status that an
interrupted command gives (nothing has been read or written yet).
"""

from __future__ import annotations

import os
import signal
from types import FrameType

INTERRUPTED = b"custody: interrupted; nothing half-written\n"
INTERRUPTED_STATUS = 2


def _while_loading(signum: int, frame: FrameType | None) -> None:
    os.write(2, INTERRUPTED)
    os._exit(INTERRUPTED_STATUS)  # not SystemExit: raised inside an import or a finalizer, it could be printed


def run() -> None:
    signal.signal(signal.SIGINT, _while_loading)
    from commands.main import run as run_command

    run_command()
