"""Locks: visible holders, stale holders never block, bounded waits, a safe lock directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.actor import Actor
from core.errors import Conflict, SystemFailure
from core.locks import Lock, ensure_lock_dir, lock_states
from tests.support.env import REPO

HOLD = """
import sys, time
sys.path.insert(0, {repo!r})
from core.actor import Actor
from core.locks import Lock
lock = Lock({lock_dir!r}, "image.demo", Actor.current()).acquire("promote demo")
print("held", flush=True)
time.sleep(1000)
"""


def hold_in_child(lock_dir: Path) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD.format(repo=str(REPO), lock_dir=str(lock_dir))],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdout.readline() == "held\n"
    return child


def test_every_lock_shows_its_holder_and_a_dead_holder_is_stale(tmp_path: Path) -> None:
    lock_dir = Path(ensure_lock_dir(str(tmp_path / "locks")))
    child = hold_in_child(lock_dir)
    try:
        (state,) = lock_states(str(lock_dir))
        assert (state.lock, state.pid, state.operation, state.stale, state.mode) == (
            "image.demo",
            child.pid,
            "promote demo",
            False,
            "exclusive",
        )
        with pytest.raises(Conflict) as e:
            Lock(str(lock_dir), "image.demo", Actor.current(), timeout=0.3).acquire("gc")
        assert f"pid {child.pid}" in str(e.value) and "promote demo" in str(e.value)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    # The kernel released the flock; the record stays, shown as stale ...
    (state,) = lock_states(str(lock_dir))
    assert state.stale and state.pid == child.pid
    # ... and never blocks the next holder.
    lock = Lock(str(lock_dir), "image.demo", Actor.current()).acquire("rollback", wait=False)  # no wait at all
    (state,) = lock_states(str(lock_dir))
    assert (state.pid, state.operation, state.stale) == (os.getpid(), "rollback", False)
    lock.release()
    assert lock_states(str(lock_dir)) == []


def test_waits_are_bounded_announced_and_visible(tmp_path: Path) -> None:
    lock_dir = Path(ensure_lock_dir(str(tmp_path / "locks")))
    child = hold_in_child(lock_dir)
    told: list[str] = []
    waiter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import sys; sys.path.insert(0, {str(REPO)!r})\n"
            "from core.actor import Actor\nfrom core.locks import Lock\n"
            f"Lock({str(lock_dir)!r}, 'image.demo', Actor.current(), timeout=30).acquire('begin x')\n"
            "print('got it')",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            modes = {(s.mode, s.pid) for s in lock_states(str(lock_dir))}
            if ("waiting", waiter.pid) in modes:
                break
            time.sleep(0.05)
        assert ("waiting", waiter.pid) in modes
        with pytest.raises(Conflict) as e:  # bounded: it gives up, and says after how long
            Lock(str(lock_dir), "image.demo", Actor.current(), timeout=0.5).acquire("gc", on_wait=told.append)
        assert "gave up after 0.5 s" in str(e.value)
        assert told and "held by pid" in told[0]
        child.kill()
        child.wait()
        assert waiter.stdout is not None and waiter.stdout.readline() == "got it\n"
    finally:
        child.kill()
        waiter.kill()
        child.wait()
        waiter.wait()
    assert not any(s.mode == "waiting" for s in lock_states(str(lock_dir)))


def test_lock_directory_must_be_private(tmp_path: Path) -> None:
    open_dir = tmp_path / "open"
    open_dir.mkdir(mode=0o777)
    os.chmod(open_dir, 0o777)
    with pytest.raises(SystemFailure, match="0700"):
        ensure_lock_dir(str(open_dir))
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(SystemFailure, match="symlink"):
        ensure_lock_dir(str(link))


def test_a_symlink_planted_as_a_lock_file_is_not_followed(tmp_path: Path) -> None:
    lock_dir = Path(ensure_lock_dir(str(tmp_path / "locks")))
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (lock_dir / "image.demo.lock").symlink_to(victim)
    with pytest.raises(SystemFailure, match="symlink planted"):
        Lock(str(lock_dir), "image.demo", Actor.current(), timeout=1).acquire("x")
    assert victim.read_text() == "precious\n"


HOLD_AND_FORK = """
import os, sys, time
sys.path.insert(0, {repo!r})
from core.actor import Actor
from core.locks import Lock
lock = Lock({lock_dir!r}, {name!r}, Actor.current()).acquire("create demo")
if os.fork() == 0:  # a child between fork and exec: it holds every descriptor
    time.sleep({linger})
    os._exit(0)
print("held", flush=True)
time.sleep(1000)
"""


def test_a_dead_holders_forked_child_is_waited_for_not_taken_for_work(tmp_path: Path) -> None:
    """Regression (soak): recover skipped a killed create's staging while a child it forked still held the lock.

    With *straggler_grace*, a non-waiting acquire whose recorded holder is dead
    waits for the straggler; without it, or with the holder alive, it refuses.
    """
    lock_dir = Path(ensure_lock_dir(str(tmp_path / "locks")))
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            HOLD_AND_FORK.format(repo=str(REPO), lock_dir=str(lock_dir), name="tx.demo", linger=0.5),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    try:
        # the holder lives: a grace changes nothing, it is work in progress
        with pytest.raises(Conflict, match=f"pid {holder.pid}"):
            Lock(str(lock_dir), "tx.demo", Actor.current()).acquire("recover", wait=False, straggler_grace=5.0)
    finally:
        holder.kill()
        holder.wait()
    with pytest.raises(Conflict):  # the straggler still holds it
        Lock(str(lock_dir), "tx.demo", Actor.current()).acquire("recover", wait=False)
    lock = Lock(str(lock_dir), "tx.demo", Actor.current()).acquire("recover", wait=False, straggler_grace=5.0)
    lock.release(remove=True)
