"""core.watch: cheap polls of a state root that re-read only what changed."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

from core import generations, watch
from tests.support.env import Env


def settle(w: watch.Watcher, image: str | None = None) -> None:
    """Poll until the racy window of the last changes has passed and a poll finds nothing."""
    deadline = time.monotonic() + 10
    while w.poll(image=image) is not None:
        assert time.monotonic() < deadline, "the watcher keeps finding changes"
        time.sleep(0.2)


def test_poll_reports_nothing_when_nothing_changed_and_follows_other_processes(bb: Env) -> None:
    first = bb.begin()
    w = watch.Watcher(bb.engine())
    try:
        snap = w.poll(image="bb")
        assert snap is not None and set(snap.sessions) == {first}
        assert snap.sessions[first].state == "mounted"
        assert snap.images["bb"].sessions == 1 and snap.history_image == "bb"
        settle(w, "bb")
        before = w.poll(image="bb")
        assert before is None
        second = bb.begin()  # another process
        snap2 = w.poll(image="bb")
        assert snap2 is not None and {"sessions", "images", "events"} <= snap2.changed
        assert set(snap2.sessions) == {first, second}
        assert snap2.sessions[first] is snap.sessions[first]  # unchanged sessions are the same objects
        assert [e["session"] for e in snap2.events] == [second]  # only the new journal lines
        bb.ok("session", "end", second)
        snap3 = w.poll(image="bb")
        assert snap3 is not None and set(snap3.sessions) == {first}
        assert [e["operation"] for e in snap3.events] == ["session end"]
    finally:
        w.close()
        bb.ok("session", "end", first)


def test_a_change_in_the_same_clock_tick_is_not_missed(bb: Env) -> None:
    w = watch.Watcher(bb.engine())
    try:
        assert w.poll() is not None
        sessions_dir = bb.state / "sessions"
        st = os.stat(sessions_dir)
        sid = bb.begin()
        # Make the directory look untouched, as a change within one tick of the coarse clock would.
        os.utime(sessions_dir, ns=(st.st_atime_ns, st.st_mtime_ns))
        snap = w.poll()
        assert snap is not None and sid in snap.sessions
    finally:
        w.close()
        for s in bb.roost("session", "list", "--json").json():
            bb.ok("session", "end", s["id"])


def test_torn_records_are_retried_until_complete(bb: Env) -> None:
    sid = bb.begin()
    w = watch.Watcher(bb.engine())
    record = bb.state / "sessions" / f"{sid}.json"
    data = record.read_bytes()
    try:
        assert w.poll() is not None
        torn = bb.state / "sessions" / "torn-1.json"
        torn.write_bytes(data[: len(data) // 2])
        snap = w.poll()
        assert snap is not None and "torn-1" not in snap.sessions and snap.broken == ("torn-1",)
        torn.write_bytes(data.replace(sid.encode(), b"torn-1"))
        snap = w.poll()
        assert snap is not None and "torn-1" in snap.sessions and snap.broken == ()
        torn.unlink()
    finally:
        w.close()
        bb.ok("session", "end", sid)


def test_the_mount_table_is_watched(bb: Env) -> None:
    sid = bb.begin()
    w = watch.Watcher(bb.engine())
    try:
        assert w.poll() is not None
        settle(w)
        subprocess.run(["umount", "-R", str(bb.run / "mnt" / sid / "root")], check=True)
        snap = w.poll()
        assert snap is not None and snap.sessions[sid].state == "needs-recovery"
    finally:
        w.close()
        bb.ok("session", "end", sid)


def test_history_and_generation_metadata_read_once(bb: Env, monkeypatch: object) -> None:
    w = watch.Watcher(bb.engine())
    reads: list[int] = []
    real = generations.read_meta

    def counting(store: object, image: str, number: int) -> object:
        reads.append(number)
        return real(store, image, number)  # type: ignore[arg-type]

    import pytest

    mp = pytest.MonkeyPatch()
    mp.setattr(generations, "read_meta", counting)
    try:
        snap = w.poll(image="bb")
        assert snap is not None and [g.generation for g in snap.history] == [1]
        m = bb.begin("bb", "--maintenance")
        bb.sh(m, "echo x > /root/x")
        snap = w.poll(image="bb")
        assert snap is not None and snap.history[0].in_use and snap.images["bb"].writer == m
        bb.ok("session", "promote", m, "-m", "two")
        snap = w.poll(image="bb")
        assert snap is not None
        assert [(g.generation, g.current, g.message) for g in snap.history][-1] == (2, True, "two")
        assert sorted(reads) == [1, 2]  # each generation's metadata was read once
    finally:
        mp.undo()
        w.close()


def test_lock_holders_and_kernel_waiters(bb: Env) -> None:
    path = bb.run / "locks" / "image.bb.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    waiter = subprocess.Popen(
        [sys.executable, "-c", f"import fcntl,os; fd=os.open({str(path)!r}, os.O_RDWR); fcntl.flock(fd, fcntl.LOCK_EX)"]
    )
    w = watch.Watcher(bb.engine())
    try:
        deadline = time.monotonic() + 10
        while True:
            snap = w.poll()
            states = w._snapshot.locks if w._snapshot else ()
            if any(s.mode == "waiting" for s in states):
                break
            assert time.monotonic() < deadline, states
            time.sleep(0.05)
        held = [s for s in states if s.lock == "image.bb" and s.mode == "exclusive"]
        waiting = [s for s in states if s.lock == "image.bb" and s.mode == "waiting"]
        assert held[0].pid == os.getpid() and not held[0].stale
        assert waiting[0].pid == waiter.pid and "blocked" in waiting[0].operation
        assert snap is None or "locks" in snap.changed
    finally:
        os.close(fd)
        waiter.wait(timeout=10)
        w.close()


def test_usage_counts_processes_and_measures_changes_within_a_budget(bb: Env) -> None:
    a = bb.begin()
    b = bb.begin()
    bb.sh(a, "dd if=/dev/zero of=/root/big bs=64k count=16 2>/dev/null")
    sleeper = subprocess.Popen(
        [sys.executable, "-m", "roost", "session", "run", b, "--", "/bin/sleep", "60"], env=bb.environ, cwd="/"
    )
    try:
        eng = bb.engine()
        sessions = [i.session for i in eng.list_sessions()]
        usage = watch.Usage()
        deadline = time.monotonic() + 10
        while usage.measure(sessions, budget=0.0, first=b).get(b, watch.Figures(0, None, True)).processes != 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert usage.figures(b).measured and not usage.figures(a).measured  # budget 0: only the first
        figures = usage.measure(sessions, budget=5.0)
        assert figures[a].disk is not None and figures[a].disk >= 1 << 20
        assert usage.figures(a).processes == 0
        assert usage.measure(sessions, budget=5.0) == {}  # nothing changed since
        bb.sh(a, "dd if=/dev/zero of=/root/more bs=64k count=16 2>/dev/null")
        assert usage.measure(sessions, budget=5.0) == {}  # measured less than 30 s ago: not yet again
        assert usage.measure(sessions, budget=5.0, again_after=0.0)[a].disk >= 2 << 20  # type: ignore[operator]
    finally:
        sleeper.kill()
        sleeper.wait()
        for sid in (a, b):
            bb.ok("session", "end", sid)


def test_journal_is_read_from_its_tail_and_then_incrementally(bb: Env, tmp_path: Path) -> None:
    w = watch.Watcher(bb.engine())
    try:
        snap = w.poll()
        assert snap is not None and [e["operation"] for e in snap.events] == ["image create"]
        journal = bb.state / "journal.jsonl"
        with open(journal, "a") as f:
            f.write('{"time":"2026-01-01T00:00:00Z","user":"x","operation":"half')
        assert w.poll() is None or w._snapshot is not None
        with open(journal, "a") as f:
            f.write('"}\n')
        snap = w.poll()
        assert snap is not None and [e["operation"] for e in snap.events] == ["half"]
    finally:
        w.close()


def test_usage_reads_memory_and_cpu_only_of_watched_sessions_with_a_cgroup(tmp_path: Path) -> None:
    from core import records

    def session(sid: str, cgroups: list[str]) -> records.Session:
        return records.Session(
            id=sid, image="bb", generation=1, kind="ordinary", owner="root", uid=0,
            created="2026-01-01T00:00:00Z", state="active", backend="overlay", profile="default",
            mountpoint=str(tmp_path / sid), clone=str(tmp_path / "clones" / sid), lowers=[], cgroups=cgroups,
        )  # fmt: skip

    found = [session("plain", []), session("shown", ["/cg/shown"]), session("hidden", ["/cg/hidden"])]
    asked: list[list[str]] = []
    cpu = {"shown": 1_000_000, "hidden": 0}

    def reader(sessions: list[records.Session]) -> dict[str, dict[str, int | None]]:
        asked.append([s.id for s in sessions])
        return {s.id: {"memory": 1 << 20, "cpu_usec": cpu[s.id]} for s in sessions}

    now = [10.0]
    usage = watch.Usage(clock=lambda: now[0])
    first = usage.measure(found, budget=0.0, loads=reader, watched={"shown", "plain"})
    assert asked == [["shown"]]  # no cgroup: nothing to read; not watched: not read
    assert first["shown"].load is not None and first["shown"].load.cpu_percent is None
    cpu["shown"] = 2_000_000
    now[0] = 12.0
    again = usage.measure(found, budget=0.0, loads=reader, watched=set(), first="hidden")
    assert asked[-1] == ["hidden"]  # the highlighted one is read even when not on screen
    assert "shown" not in again and usage.loads["shown"].cpu_usec == 1_000_000  # kept, not read again
    assert usage.figures("hidden").load is not None and usage.figures("plain").load is None
    now[0] = 14.0
    usage.measure(found, budget=0.0, loads=reader, watched={"shown"})
    assert usage.loads["shown"].cpu_percent == 25.0  # 1 s of CPU over the 4 s since it was last read
