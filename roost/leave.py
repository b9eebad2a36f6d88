"""Ending a short command without the interpreter's teardown.

When a command returns, Python tears itself down: it clears every module's
namespace, runs a last cycle collection and frees what is left. With the
engine loaded that costs about 2 ms, more than the whole ``session end`` of a
plain session, and it does nothing a short command needs: roost's files are
written and closed by the code that writes them (atomic renames, flushed
journal lines), its locks are flocks the kernel drops with the process, and it
registers nothing with ``atexit``. The launchers (bin/roost, bin/roost-schroot)
therefore end the fast commands here, after flushing stdout and stderr as the
teardown would have. The console and the long operations (roost.cli) still end
the usual way.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn


def now(code: int | None) -> NoReturn:
    """Flush stdout and stderr and end the process with *code* (as ``sys.exit`` takes it), skipping the teardown.

    Falls back to ``sys.exit`` when a thread other than the main one is
    still running (the teardown would wait for it).
    """
    status = code if isinstance(code, int) else (0 if code is None else 1)
    threading = sys.modules.get("threading")
    if threading is not None and any(t is not threading.main_thread() and t.is_alive() for t in threading.enumerate()):
        sys.exit(status)
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):  # a closed pipe: what Python's own teardown reports as exit code 120
            if stream is sys.stdout and status == 0:
                status = 120
    os._exit(status & 0xFF)
