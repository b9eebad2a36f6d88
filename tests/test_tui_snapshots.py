"""Snapshots of the console on the demo state, at 80x24 and 160x48.

The demo state (tests/support/demo.py) is built with the real engine, at a fixed place
and with fixed times, sizes, ids and host name, and the console's clock is
frozen: a snapshot changes only when the layout does. Refresh the baselines
with ``pytest tests/test_tui_snapshots.py --snapshot-update`` (in their own
commit when Textual is upgraded).
"""

from __future__ import annotations

import fcntl
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import demo
from tests.support.env import need_root

#: Fixed, so that the paths the console shows are the same in every run; the lock
#: beside it keeps two runs of this module on one machine from sharing it.
BASE = Path("/tmp/roost-console-snapshots")


@pytest.fixture(scope="module")
def demo_state() -> Iterator[demo.Demo]:
    need_root()
    if not shutil.which("busybox"):
        pytest.skip("busybox-static is not installed")
    with open(f"{BASE}.lock", "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        with demo.demo(BASE) as state:
            yield state


@pytest.mark.parametrize("size", sorted(demo.SIZES))
@pytest.mark.parametrize(
    "scene", ["main", "history", "promote", "end", "rollback", "help", "create", "creating", "hosts"]
)
def test_console_snapshot(demo_state: demo.Demo, snap_compare: Any, scene: str, size: str) -> None:
    app = demo.console(demo_state, scene)
    assert snap_compare(app, terminal_size=demo.SIZES[size], run_before=demo.scenes()[scene])
