"""The console driven by Pilot against real state roots with real (overlay, busybox) sessions.

Every test asserts on the engine's state afterwards, not only on the screen.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import html
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.notifications import SeverityLevel
from textual.pilot import Pilot

from tests.support import rootfs
from tests.support.env import Env
from tests.support.mounts import mounts_under
from tui.app import RoostConsole
from tui.widgets.dialogs import ChoiceDialog, ConfirmDialog, OutputDialog, PromptDialog
from tui.widgets.help import HelpScreen


class Console(RoostConsole):
    """The console, remembering every notification it showed."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.notes: list[tuple[str, SeverityLevel]] = []

    def notify(self, message: str, *, severity: SeverityLevel = "information", **kw: Any) -> None:
        self.notes.append((message, severity))
        super().notify(message, severity=severity, **kw)


Scenario = Callable[[Pilot[Any], Console], Awaitable[None]]


def drive(env: Env, scenario: Scenario, *, size: tuple[int, int] = (160, 48), engine: Any = None, **kw: Any) -> Console:
    """Run the console on *env*'s state root (as *engine*'s actor, else as root) and play *scenario* against it."""
    app = Console(engine or env.engine(), host="test-host", interval=0.1, usage_interval=0.3, **kw)

    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            await until(pilot, lambda: app.loaded)
            await scenario(pilot, app)
            await app.workers.wait_for_complete()

    asyncio.run(main())
    return app


async def until(
    pilot: Pilot[Any],
    predicate: Callable[[], object],
    timeout: float = 20.0,
    describe: Callable[[], str] | None = None,
) -> None:
    """Wait for *predicate*; on timeout, say what *describe* saw (what the screen showed instead)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            seen = f": {describe()}" if describe is not None else ""
            raise AssertionError(f"timed out waiting for {predicate}{seen}")
        await pilot.pause(0.05)


async def shown(pilot: Pilot[Any], app: Console, screen: type) -> str:
    """Wait for a screen of type *screen*, let it draw, and return the terminal's text."""
    await until(pilot, lambda: isinstance(app.screen, screen))
    await pilot.pause(0.2)
    return screen_text(app)


def sessions(env: Env) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in env.roost("session", "list", "--json").json()}


def notes(app: Console) -> list[str]:
    return [message for message, _ in app.notes]


def screen_text(app: Console) -> str:
    """What the terminal shows (all screens composited), as plain text."""
    svg = app.export_screenshot()
    lines = re.findall(r"<text [^>]*>(.*?)</text>", svg)
    return html.unescape(" ".join(lines)).replace("\xa0", " ")


def end_all(env: Env) -> None:
    for sid in sessions(env):
        env.ok("session", "end", sid)


@pytest.fixture
def bb2(bb: Env) -> Iterator[Env]:
    """Image bb, ended sessions cleaned up after the test."""
    yield bb
    end_all(bb)


# --- what it shows ---------------------------------------------------------------------------


def test_console_shows_images_sessions_locks_history_and_follows_other_processes(bb2: Env) -> None:
    env = bb2
    first = env.begin()
    maint = env.begin("bb", "--maintenance")
    other: dict[str, str] = {}

    async def scenario(pilot: Pilot[Any], app: Console) -> None:
        main = app.main
        await until(pilot, lambda: {first, maint} <= set(main.sessions_pane.table.model))
        assert set(main.images_pane.table.model) == {"bb"}
        assert main.images_pane.images["bb"].sessions == 2
        assert [g.generation for g in main.history_pane.generations] == [1]
        assert any(s.lock == "writer.bb" and s.mode == "lease" for s in main.locks_pane.locks)
        # Another process begins and ends sessions: the console follows on its own.
        other["sid"] = env.begin()
        await until(pilot, lambda: other["sid"] in main.sessions_pane.table.model)
        env.ok("session", "end", other["sid"])
        await until(pilot, lambda: other["sid"] not in main.sessions_pane.table.model)
        # Journal events of other processes show up in the event log.
        await until(pilot, lambda: any(e.get("session") == other["sid"] for e in main.events.entries))
        # Processes and disk use are measured in the background.
        await until(pilot, lambda: first in app.usage and app.usage[first].measured)
        assert "mounted" in screen_text(app)

    drive(env, scenario)
    assert set(sessions(env)) == {first, maint}


def test_locks_pane_shows_holders_stale_records_and_kernel_waiters(bb2: Env) -> None:
    env = bb2
    lock_dir = env.run / "locks"
    path = lock_dir / "image.bb.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.pwrite(fd, json.dumps({"pid": os.getpid(), "user": "alice", "operation": "gc", "since": "x"}).encode(), 0)
    waiter = subprocess.Popen(
        [sys.executable, "-c", f"import fcntl,os; fd=os.open({str(path)!r}, os.O_RDWR); fcntl.flock(fd, fcntl.LOCK_EX)"]
    )
    stale = lock_dir / "image.gone.lock"
    stale.write_text(
        json.dumps({"pid": 999999, "user": "bob", "operation": "promote", "since": "2026-01-01T00:00:00Z"})
    )

    async def scenario(pilot: Pilot[Any], app: Console) -> None:
        def states() -> dict[tuple[str, str], Any]:
            return {(s.lock, s.mode): s for s in app.main.locks_pane.locks}

        await until(pilot, lambda: ("image.bb", "waiting") in states())
        held = states()[("image.bb", "exclusive")]
        assert held.pid == os.getpid() and held.user == "alice" and not held.stale
        assert states()[("image.bb", "waiting")].pid == waiter.pid
        gone = states()[("image.gone", "exclusive")]
        assert gone.stale and gone.user == "bob"
        await pilot.press("4")
        assert app.main.active == "locks"

    try:
        drive(env, scenario)
    finally:
        os.close(fd)
        waiter.wait(timeout=10)
        stale.unlink()


# --- what it does: images ---------------------------------------------------------------------


def test_begin_ordinary_and_maintenance_sessions_from_the_images_pane(bb2: Env) -> None:
    env = bb2

    async def scenario(pilot: Pilot[Any], app: Console) -> None:
        await pilot.press("1")
        await until(pilot, lambda: app.main.images_pane.selected == "bb")
        await pilot.press("b")
        await until(pilot, lambda: len(app.main.sessions_pane.sessions) == 1)
        await pilot.press("1", "m")
        await until(pilot, lambda: len(app.main.sessions_pane.sessions) == 2)
        # The new session is highlighted in the sessions pane.
        await until(pilot, lambda: app.main.active == "sessions")

    drive(env, scenario)
    kinds = sorted(s["kind"] for s in sessions(env).values())
    assert kinds == ["maintenance", "ordinary"]
    assert all(s["state"] == "mounted" for s in sessions(env).values())
    assert env.roost("image", "info", "bb", "--json").json()["writer"] is not None


def _promote_times(env: Env, n: int) -> None:
    for i in range(n):
        sid = env.begin("bb", "--maintenance")
        env.sh(sid, f"echo {i} > /root/gen-{i}")
        env.ok("session", "promote", sid, "-m", f"step {i}")


def test_rollback_from_the_history_pane_after_confirmation(bb2: Env) -> None:
    env = bb2
    _promote_times(env, 2)  # generations 1, 2, 3

    async def scenario(pilot: Pilot[Any], app: Console) -> None:
        await pilot.press("3")
        await until(pilot, lambda: len(app.main.history_pane.generations) == 3)
        app.main.history_pane.table.select_key("1")
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        assert "generation 1" in screen_text(app) and "bb" in screen_text(app)
        await pilot.press("n")  # cancelled: nothing changes
        await pilot.pause(0.2)
        assert env.roost("image", "info", "bb", "--json").json()["current"] == 3
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("y")
        await until(pilot, lambda: app.main.images_pane.images["bb"].current == 1)
        await until(pilot, lambda: next(g for g in app.main.history_pane.generations if g.current).generation == 1)

    drive(env, scenario)
    history = env.roost("image", "history", "bb", "--json").json()
    assert [g["generation"] for g in history if g["current"]] == [1]


def test_gc_names_what_it_deletes_and_deletes_it(bb2: Env) -> None:
    env = bb2
    env.config.write_text(env.config.read_text() + "retention: 1\n")
    _promote_times(env, 2)  # 1, 2, 3
    env.ok("image", "rollback", "bb", "1")
    _promote_times(env, 1)  # 4 on top of 1: 2 and 3 are a dead branch

    async def scenario(pilot: Pilot[Any], app: Console) -> None:
        await pilot.press("1", "g")
        text = await shown(pilot, app, ConfirmDialog)
        assert "2, 3" in text and "bb" in text
        await pilot.press("y")
        await until(pilot, lambda: len(app.main.history_pane.generations) == 2)

    drive(env, scenario)
    assert [g["generation"] for g in env.roost("image", "history", "bb", "--json").json()] == [1, 4]


# --- what it does: sessions -------------------------------------------------------------------


def _select(app: Console, sid: str) -> None:
    app.main.action_show_pane("sessions")
    assert app.main.sessions_pane.table.select_key(sid)


def test_end_session_names_what_is_lost_and_leaves_nothing(bb2: Env) -> None:
    env = bb2
    sid = env.begin()
    env.sh(sid, "dd if=/dev/zero of=/root/big bs=64k count=32 2>/dev/null")

    async def scenario(pilot: Pilot[Any], app: Console) -> None:
        await until(pilot, lambda: sid in app.main.sessions_pane.table.model)
        _select(app, sid)
        await pilot.press("d")
        text = await shown(pilot, app, ConfirmDialog)
        assert sid in text and "Lost for good" in text and "MiB written since it began" in text
        await pilot.press("n")
        await pilot.pause(0.2)
        assert sid in sessions(env)
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("y")
        await until(pilot, lambda: sid not in app.main.sessions_pane.table.model)

    drive(env, scenario)
    assert sid not in sessions(env)
    assert not (env.run / "mnt" / sid).exists()
    assert not (env.state / "sessions" / sid).exists()


def test_promote_asks_for_a_message_and_makes_the_next_generation(bb2: Env) -> None:
    env = bb2
    sid = env.begin("bb", "--maintenance")
    env.sh(sid, "echo promoted > /root/marker")

    async def scenario(pilot: Pilot[Any], app: Console) -> None:
        await until(pilot, lambda: sid in app.main.sessions_pane.table.model)
        _select(app, sid)
        await pilot.press("p")
        await until(pilot, lambda: isinstance(app.screen, PromptDialog))
        assert "generation 2" in screen_text(app) and sid in screen_text(app)
        await pilot.press(*"add marker", "enter")
        await until(pilot, lambda: app.main.images_pane.images["bb"].current == 2)

    drive(env, scenario)
    history = env.roost("image", "history", "bb", "--json").json()
    assert history[-1]["generation"] == 2 and history[-1]["message"] == "add marker" and history[-1]["current"]
    assert sid not in sessions(env)
    probe = env.begin()
    assert env.sh(probe, "cat /root/marker").out == "promoted\n"


def test_promote_is_refused_clearly_when_the_base_is_no_longer_current(bb2: Env) -> None:
    env = bb2
    old = env.begin()  # cloned from generation 1
    _promote_times(env, 1)  # bb is now at generation 2

    async def scenario(pilot: Pilot[Any], app: Console) -> None:
        await until(pilot, lambda: old in app.main.sessions_pane.table.model)
        _select(app, old)
        await pilot.press("p")
        await until(pilot, lambda: any("not" in n or "cannot promote" in n for n in notes(app)))
        assert not isinstance(app.screen, PromptDialog)
        message = next(n for n in notes(app) if "cannot promote" in n)
        assert "generation 1" in message and "generation 2" in message

    drive(env, scenario)
    assert env.roost("image", "info", "bb", "--json").json()["current"] == 2
    assert old in sessions(env)


def test_recover_remounts_a_session_that_needs_it(bb2: Env) -> None:
    env = bb2
    sid = env.begin()
    env.sh(sid, "echo kept > /root/kept")
    subprocess.run(["umount", "-R", str(env.run / "mnt" / sid / "root")], check=True)
    assert sessions(env)[sid]["state"] == "needs-recovery"

    async def scenario(pilot: Pilot[Any], app: Console) -> None:
        await until(pilot, lambda: app.main.sessions_pane.sessions.get(sid) is not None)
        _select(app, sid)
        await until(pilot, lambda: app.main.selected_session() is not None)
        assert app.main.selected_session().state == "needs-recovery"  # type: ignore[union-attr]
        await pilot.press("r")
        await until(pilot, lambda: app.main.sessions_pane.sessions[sid].state == "mounted")

    drive(env, scenario)
    assert sessions(env)[sid]["state"] == "mounted"
    assert env.sh(sid, "cat /root/kept").out == "kept\n"


def test_a_lost_session_is_shown_lost_and_recover_ends_it(bb2: Env) -> None:
    env = bb2
    sid = env.begin()  # ordinary: volatile
    env.sh(sid, "echo unsynced > /root/gone")
    # a reboot: every mount gone, the runtime root wiped
    for target in sorted(mounts_under(env.run), key=len, reverse=True):
        subprocess.run(["umount", target], check=True)
    subprocess.run(["rm", "-rf", "--one-file-system", str(env.run)], check=True)
    assert sessions(env)[sid]["state"] == "lost"

    async def scenario(pilot: Pilot[Any], app: Console) -> None:
        await until(pilot, lambda: app.main.sessions_pane.sessions.get(sid) is not None)
        _select(app, sid)
        await until(pilot, lambda: app.main.selected_session() is not None)
        assert app.main.selected_session().state == "lost"  # type: ignore[union-attr]
        assert "lost" in screen_text(app)
        assert app.main.check_action("recover", ()) is True
        assert app.main.check_action("enter_session", ()) is None
        assert app.main.check_action("promote", ()) is None
        await pilot.press("r")
        await until(pilot, lambda: sid not in app.main.sessions_pane.sessions)
        assert any("lost" in n for n in notes(app))

    drive(env, scenario)
    assert sid not in sessions(env)


def test_run_a_command_and_show_its_output(bb2: Env) -> None:
    env = bb2
    sid = env.begin()

    async def scenario(pilot: Pilot[Any], app: Console) -> None:
        await until(pilot, lambda: sid in app.main.sessions_pane.table.model)
        _select(app, sid)
        await pilot.press("x")
        await until(pilot, lambda: isinstance(app.screen, PromptDialog))
        await pilot.press(*"echo hello; echo oops >&2; touch /root/ran; exit 3", "enter")
        await until(pilot, lambda: isinstance(app.screen, OutputDialog) and app.screen.finished)
        text = screen_text(app)
        assert "hello" in text and "oops" in text and "exit status 3" in text
        await pilot.press("escape")

    drive(env, scenario)
    assert env.sh(sid, "test -e /root/ran").code == 0


def test_closing_the_output_stops_a_command_that_keeps_running(bb2: Env) -> None:
    env = bb2
    sid = env.begin()

    async def scenario(pilot: Pilot[Any], app: Console) -> None:
        await until(pilot, lambda: sid in app.main.sessions_pane.table.model)
        _select(app, sid)
        await pilot.press("x")
        await until(pilot, lambda: isinstance(app.screen, PromptDialog))
        await pilot.press(*"trap '' TERM; echo started; sleep 300 & wait", "enter")
        await until(pilot, lambda: isinstance(app.screen, OutputDialog) and "started" in screen_text(app))
        dialog = app.screen
        assert isinstance(dialog, OutputDialog) and dialog.pid is not None
        started.append(dialog.pid)
        await pilot.press("escape")
        await until(pilot, lambda: "run" not in app.main.busy.values())

    started: list[int] = []
    drive(env, scenario)
    with pytest.raises(ProcessLookupError):  # the shell ignored TERM, so it got KILL, and was reaped
        os.kill(started[0], 0)


def test_enter_hands_the_terminal_to_a_login_shell_and_comes_back(bb2: Env, tmp_path: Path) -> None:
    env = bb2
    sid = env.begin()
    script = tmp_path / "typed"
    script.write_text("echo inside > /root/entered\nexit 7\n")
    out = tmp_path / "shell-output"
    suspended: list[bool] = []

    @contextlib.contextmanager
    def suspend() -> Iterator[None]:  # what App.suspend does on a real terminal, minus the terminal
        suspended.append(True)
        yield

    async def scenario(pilot: Pilot[Any], app: Console) -> None:
        await until(pilot, lambda: sid in app.main.sessions_pane.table.model)
        app.suspend = suspend  # type: ignore[method-assign]
        _select(app, sid)
        await pilot.press("e")
        await until(pilot, lambda: any("back from session" in n for n in notes(app)))
        assert any("exited with 7" in n for n in notes(app))

    stdin = os.open(script, os.O_RDONLY)
    stdout = os.open(out, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        drive(env, scenario, terminal={"stdin": stdin, "stdout": stdout, "stderr": stdout})
    finally:
        os.close(stdin)
        os.close(stdout)
    assert suspended == [True]
    assert env.sh(sid, "cat /root/entered").out == "inside\n"


def test_enter_where_the_terminal_cannot_be_handed_over_says_what_to_run(bb2: Env) -> None:
    env = bb2
    sid = env.begin()

    async def scenario(pilot: Pilot[Any], app: Console) -> None:
        await until(pilot, lambda: sid in app.main.sessions_pane.table.model)
        _select(app, sid)
        await pilot.press("enter")  # same as e
        await until(pilot, lambda: any("roost session enter" in n for n in notes(app)))

    drive(env, scenario)
    assert sessions(env)[sid]["state"] == "mounted"


def test_engine_errors_become_notifications_not_crashes(bb2: Env) -> None:
    env = bb2
    _promote_times(env, 1)  # generations 1 and 2
    maint = env.begin("bb", "--maintenance")

    async def scenario(pilot: Pilot[Any], app: Console) -> None:
        # The engine refuses a rollback while a maintenance session holds the writer lock.
        await pilot.press("3")
        await until(pilot, lambda: len(app.main.history_pane.generations) == 2)
        app.main.history_pane.table.select_key("1")
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("y")
        await until(pilot, lambda: any("being maintained" in n for n in notes(app)))
        message, severity = next(n for n in app.notes if "being maintained" in n[0])
        assert severity == "error" and maint in message
        assert app.is_running
        # A session that vanished behind the console's back.
        ghost = env.begin()
        await until(pilot, lambda: ghost in app.main.sessions_pane.table.model)
        app.main.end_session(ghost)
        env.ok("session", "end", ghost)
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog) or any(ghost in n for n in notes(app)))
        if isinstance(app.screen, ConfirmDialog):
            await pilot.press("y")
        await until(pilot, lambda: any(f"no session '{ghost}'" in n for n in notes(app)))
        assert app.is_running

    drive(env, scenario)
    assert env.roost("image", "info", "bb", "--json").json()["current"] == 2
    assert set(sessions(env)) == {maint}


def test_end_offers_force_when_a_mount_is_kept_busy_from_outside(bb2: Env) -> None:
    env = bb2
    sid = env.begin()
    holder = subprocess.Popen(["sleep", "60"], cwd=env.run / "mnt" / sid / "root" / "root")  # outside, cwd inside

    async def scenario(pilot: Pilot[Any], app: Console) -> None:
        await until(pilot, lambda: sid in app.main.sessions_pane.table.model)
        _select(app, sid)
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("y")
        await until(pilot, lambda: "Force end" in screen_text(app))
        assert str(holder.pid) in screen_text(app)
        assert sid in sessions(env)  # refused: nothing changed yet
        await pilot.press("y")
        await until(pilot, lambda: sid not in app.main.sessions_pane.table.model)

    try:
        drive(env, scenario)
    finally:
        holder.kill()
        holder.wait()
    assert sid not in sessions(env)


def test_run_console_reports_a_bad_configuration_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "roost.yaml"
    bad.write_text("retention: many\n")
    monkeypatch.setenv("ROOST_CONFIG", str(bad))
    from tui.app import run_console

    assert run_console() == 2
    err = capsys.readouterr().err
    assert err.startswith("roost: ") and "retention" in err and err.count("\n") == 1


# --- keys, help, palette, filter --------------------------------------------------------------


def test_filter_and_sort_sessions(bb2: Env) -> None:
    env = bb2
    a = env.begin("bb", "--name", "alpha-1")
    b = env.begin("bb", "--name", "beta-2")
    c = env.begin("bb", "--maintenance", "--name", "gamma-3")

    async def scenario(pilot: Pilot[Any], app: Console) -> None:
        table = app.main.sessions_pane.table
        await until(pilot, lambda: {a, b, c} <= set(table.model))
        await pilot.press("slash", *"maint")
        await until(pilot, lambda: set(table.model) == {c})
        await pilot.press("enter")
        assert table.has_focus
        await pilot.press("escape")
        await until(pilot, lambda: set(table.model) == {a, b, c})
        assert table.sort_column == "id"
        order = [table.coordinate_to_cell_key((i, 0)).row_key.value for i in range(3)]  # type: ignore[arg-type]
        assert order == [a, b, c]
        await pilot.press("S")
        order = [table.coordinate_to_cell_key((i, 0)).row_key.value for i in range(3)]  # type: ignore[arg-type]
        assert order == [c, b, a]
        await pilot.press("s")
        assert table.sort_column == "image"

    drive(env, scenario)
    assert set(sessions(env)) == {a, b, c}


def test_help_lists_every_key_and_the_palette_offers_every_action(bb2: Env) -> None:
    env = bb2
    sid = env.begin()

    async def scenario(pilot: Pilot[Any], app: Console) -> None:
        await until(pilot, lambda: sid in app.main.sessions_pane.table.model)
        await pilot.press("question_mark")
        text = await shown(pilot, app, HelpScreen)
        for word in ("Begin", "Maintain", "GC", "Enter", "Run", "Promote", "End", "Recover", "Filter", "Rollback"):
            assert word in text, word
        await pilot.press("escape")
        from tui.palette import commands

        _select(app, sid)
        names = [name for name, _, _ in commands(app.main)]
        for verb in ("Begin a session", "maintenance", "Garbage-collect", "Enter session", "Run a command", "Promote"):
            assert any(verb in n for n in names), verb
        assert any(n == f"End session {sid}" for n in names)
        # Through the palette: end the selected session.
        await pilot.press("ctrl+p")
        await pilot.press(*f"End session {sid}")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("y")
        await until(pilot, lambda: sid not in app.main.sessions_pane.table.model)

    drive(env, scenario)
    assert sid not in sessions(env)


def test_works_at_80x24_with_no_color(bb2: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    env = bb2
    sid = env.begin()
    monkeypatch.setenv("NO_COLOR", "1")

    async def scenario(pilot: Pilot[Any], app: Console) -> None:
        assert app.no_color
        await until(pilot, lambda: sid in app.main.sessions_pane.table.model)
        text = screen_text(app)
        assert sid[:8] in text and "Sessions" in text
        # Narrow: one pane at a time; 1-4 switch.
        await pilot.press("1")
        assert app.main.images_pane.display and not app.main.sessions_pane.display
        await pilot.press("tab")
        assert app.main.active == "sessions"

    drive(env, scenario, size=(80, 24))


# --- isolation: network, memory and CPU per session (issue 15) ----------------------------------


@pytest.fixture
def iso2(bb2: Env) -> Iterator[Env]:
    """Image bb with a cgroup parent of the test's own; no cgroup or namespace of it may remain."""
    from core import cgroups, cgroups_upkeep

    parent = f"roost-t-cs-{os.getpid()}-{os.urandom(3).hex()}"
    with open(bb2.config, "a", encoding="utf-8") as f:
        f.write(f"cgroup-parent: {parent}\n")
    yield bb2
    for s in sessions(bb2):
        bb2.roost("session", "end", s, "--force")
    bb2.roost("session", "recover", "--all")  # the state root's cgroup slice outlives its sessions
    left = []
    for h in cgroups.hierarchies():
        top = os.path.join(h.path, parent)
        if os.path.isdir(top):
            left += [os.path.join(p, d) for p, dirs, _ in os.walk(top) for d in dirs] + [top]
    for path in sorted(left, key=len, reverse=True):  # clean up before failing
        cgroups_upkeep.kill([path])
        os.rmdir(path)
    netns = list((bb2.run / "netns").glob("*")) if (bb2.run / "netns").exists() else []
    assert netns == [], f"network namespaces left behind: {netns}"
    assert all(os.path.basename(p) == parent for p in left), f"cgroups left behind: {left}"


def _cell(app: Console, sid: str, column: str) -> str:
    """The text of one cell of the sessions table."""
    table = app.main.sessions_pane.table
    return str(table.get_cell(sid, column)).strip()


def test_sessions_show_network_memory_and_cpu_and_the_network_switches(iso2: Env, tmp_path: Path) -> None:
    env = iso2
    spin_errors = tmp_path / "spin-stderr"
    busy = env.begin("bb", "--limit", "memory=64M")
    offline = env.begin("bb", "--network", "none")
    # A command that keeps a CPU busy inside the limited session (killed when the session ends).
    spin = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "roost",
            "session",
            "run",
            busy,
            "--",
            "/bin/sh",
            "-c",
            "while :; do :; done",
        ],
        env=env.environ,
        cwd="/",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=spin_errors.open("wb"),
    )

    def seen(app: Console) -> str:
        """The cells and the spinning command's state, for a timeout's message."""
        exited = spin.poll()
        state = "running" if exited is None else f"exited {exited}: {spin_errors.read_text()!r}"
        cells = f"memory {_cell(app, busy, 'memory')!r}, cpu {_cell(app, busy, 'cpu')!r}"
        workers = [w.name for w in app.workers if w.is_running]
        return (
            f"{cells}, read at {app.meter.loaded_at.get(busy)}, shown {sorted(app.shown_sessions)},"
            f" workers {workers}, notes {notes(app)}, command {state}"
        )

    async def scenario(pilot: Pilot[Any], app: Console) -> None:
        pane = app.main.sessions_pane
        await until(pilot, lambda: {busy, offline} <= set(pane.table.model))
        assert _cell(app, offline, "network") == "none" and _cell(app, busy, "network") == "host"
        assert _cell(app, offline, "memory") == "-"  # no cgroup: nothing accounts it
        # Memory and then (two readings later) a CPU share for the session with a cgroup.
        await until(pilot, lambda: _cell(app, busy, "memory") not in ("…", "-", "0"), describe=lambda: seen(app))
        spinning = lambda: _cell(app, busy, "cpu").endswith("%") and _cell(app, busy, "cpu") != "0%"  # noqa: E731
        await until(pilot, spinning, describe=lambda: seen(app))
        assert app.shown_sessions == {busy, offline}  # both rows are on screen
        _select(app, busy)
        await pilot.pause(0.3)
        detail = screen_text(app)
        assert "limits" in detail and "memory 64.0 MiB" in detail and "network" in detail
        assert re.search(r"usage +memory [0-9.]+ [KM]iB", detail) and "CPU" in detail
        # Filtered out and not highlighted: its memory and CPU are no longer read.
        _select(app, offline)
        await pilot.press("slash", *offline[-6:], "enter")
        await until(pilot, lambda: app.shown_sessions == {offline})
        await pilot.pause(0.5)
        read = app.meter.loaded_at[busy]
        await pilot.pause(1.0)  # three rounds of the usage loop
        assert app.meter.loaded_at[busy] == read
        await pilot.press("escape")
        # Switch the network of the offline session back to the host's, after a confirmation.
        _select(app, offline)
        await pilot.press("n")
        text = await shown(pilot, app, ChoiceDialog)
        assert offline in text and "none (now)" in text and "keep the network they started with" in text
        await pilot.press("escape")  # cancelled: nothing changes
        await pilot.pause(0.2)
        assert sessions(env)[offline]["network"] == "none"
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, ChoiceDialog))
        await pilot.press("h")
        await until(pilot, lambda: _cell(app, offline, "network") == "host")

    try:
        app = drive(env, scenario)
    finally:
        env.roost("session", "end", busy, "--force")
        spin.wait(timeout=30)
    assert sessions(env)[offline]["network"] == "host"
    assert f"{offline}: network none -> host" in notes(app)


# --- diffs: promote, history, rollback (issue 16) ------------------------------------------------

STATUS = """Package: dpkg
Status: install ok installed
Architecture: amd64
Version: 1.21.22

Package: hello
Status: install ok installed
Architecture: amd64
Version: {hello}
{extra}"""

NANO = """
Package: nano
Status: install ok installed
Architecture: amd64
Version: 7.2-1
"""


def _write_status(env: Env, sid: str, hello: str, extra: str = "") -> None:
    status = STATUS.format(hello=hello, extra=extra)
    env.sh(sid, f"mkdir -p /var/lib/dpkg && cat > /var/lib/dpkg/status <<'END'\n{status}END\n")


async def _computed(pilot: Pilot[Any], app: Console) -> str:
    """Wait until the diff in the dialog on top is computed; the terminal's text."""
    from tui.widgets.diffs import DiffLines

    await until(pilot, lambda: app.screen.query(DiffLines) and app.screen.query_one(DiffLines).pairs is not None)
    await pilot.pause(0.2)
    return screen_text(app)


def test_promote_dialog_shows_the_sessions_packages_and_files_before_the_message(bb2: Env) -> None:
    env = bb2
    sid = env.begin("bb", "--maintenance")
    _write_status(env, sid, "2.10-2")
    env.sh(sid, "echo x > /root/a && echo y > /root/b")

    async def scenario(pilot: Pilot[Any], app: Console) -> None:
        await until(pilot, lambda: sid in app.main.sessions_pane.table.model)
        _select(app, sid)
        await pilot.press("p")
        await until(pilot, lambda: isinstance(app.screen, PromptDialog))
        text = await _computed(pilot, app)
        assert "What it changed:" in text
        assert "packages: 2 installed: dpkg, hello" in text
        assert re.search(r"files: \d+ added, 0 removed, \d+ changed \(\+", text)
        assert text.index("packages:") < text.index("A message says what changed")
        await pilot.press(*"hello 2.10", "enter")
        await until(pilot, lambda: app.main.images_pane.images["bb"].current == 2)

    drive(env, scenario)
    assert env.roost("image", "history", "bb", "--json").json()[-1]["message"] == "hello 2.10"


def _promote_status(env: Env, hello: str, extra: str = "") -> None:
    sid = env.begin("bb", "--maintenance")
    _write_status(env, sid, hello, extra)
    env.ok("session", "promote", sid, "-m", f"hello {hello}")


def test_history_shows_what_each_generation_changed_and_rollback_names_the_packages(bb2: Env) -> None:
    env = bb2
    _promote_status(env, "2.10-2")  # 2: dpkg and hello installed
    _promote_status(env, "2.10-3", NANO)  # 3: hello upgraded, nano installed

    async def scenario(pilot: Pilot[Any], app: Console) -> None:
        await pilot.press("3")
        await until(pilot, lambda: len(app.main.history_pane.generations) == 3)
        app.main.history_pane.table.select_key("3")
        await until(pilot, lambda: any(k[:2] == ("bb", 3) for k in app.main.changes_read))
        await pilot.pause(0.2)
        assert "1 upgraded, 1 installed: hello, nano" in screen_text(app)
        app.main.history_pane.table.select_key("1")
        await pilot.pause(0.3)
        assert "the first generation" in screen_text(app)
        app.main.history_pane.table.select_key("2")
        await until(pilot, lambda: any(k[:2] == ("bb", 2) for k in app.main.changes_read))
        await pilot.pause(0.2)
        assert "2 installed: dpkg, hello" in screen_text(app)
        # Rollback to 2 names the packages that change back.
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        text = await _computed(pilot, app)
        assert "1 downgraded, 1 removed by the rollback" in text
        assert "hello 2.10-3 -> 2.10-2 (downgraded)" in text and "nano 7.2-1 (removed)" in text
        await pilot.press("y")
        await until(pilot, lambda: app.main.images_pane.images["bb"].current == 2)

    drive(env, scenario)
    assert env.roost("image", "info", "bb", "--json").json()["current"] == 2


def test_a_diff_that_cannot_be_computed_is_one_line_not_a_crash(bb2: Env) -> None:
    from core.actor import Actor
    from core.engine import Engine
    from core.settings import load

    env = bb2
    _promote_times(env, 2)  # 1, 2, 3
    # A user of the image (through sudo), not one of its root-users: a generation's diff is refused.
    user = "roost-t-cs-bob"
    image_yaml = env.state / "images" / "bb" / "image.yaml"
    image_yaml.write_text(image_yaml.read_text() + f"users: [{user}]\n")
    actor = Actor(uid=2000, user=user, pid=os.getpid(), groups=(), via_sudo=True)
    engine = Engine(load(environ=env.environ), actor=actor)

    async def scenario(pilot: Pilot[Any], app: Console) -> None:
        await pilot.press("3")
        await until(pilot, lambda: len(app.main.history_pane.generations) == 3)
        app.main.history_pane.table.select_key("3")
        await until(pilot, lambda: any(k[:2] == ("bb", 3) for k in app.main.changes_read))
        pairs = next(v for k, v in app.main.changes_read.items() if k[:2] == ("bb", 3))
        assert len(pairs) == 1 and pairs[0][0] == "changes" and pairs[0][1].startswith("not shown: ")
        assert "\n" not in pairs[0][1] and "root" in pairs[0][1]
        await pilot.pause(0.2)
        assert "not shown:" in screen_text(app)

    app = drive(env, scenario, engine=engine)
    assert not [n for n, severity in app.notes if severity == "error"]


# --- creating images ---------------------------------------------------------------------------


def _tarball(busybox_tree: Path, tmp_path: Path) -> Path:
    tarball = tmp_path / "bb.tar.gz"
    subprocess.run(["tar", "--numeric-owner", "-czf", str(tarball), "-C", str(busybox_tree), "."], check=True)
    return tarball


def _fill(dialog: Any, **fields: str) -> None:
    from textual.widgets import Input

    for name, value in fields.items():
        dialog.query_one(f"#{name}", Input).value = value


def _children(existing: frozenset[int] = frozenset()) -> list[int]:
    """Processes this test process started that still exist (zombies included), but for *existing*
    (what the session's fixtures started before the test: a zfs-fuse daemon)."""
    me = str(os.getpid())
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) not in existing:
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[1] == me:
                        found.append(int(entry))
            except OSError:
                continue
    return found


def test_an_empty_state_offers_to_create_an_image_and_one_is_created_from_a_tarball(
    env: Env, busybox_tree: Path, tmp_path: Path
) -> None:
    from textual.widgets import Static

    from tui.widgets.create import CreateDialog

    tarball = _tarball(busybox_tree, tmp_path)

    async def scenario(pilot: Pilot[Any], app: Console) -> None:
        main = app.main
        # A first-time user is shown the images pane and told which key creates one.
        await until(pilot, lambda: main.active == "images")
        await pilot.pause(0.1)
        text = screen_text(app)
        assert "No images yet. Press c to create one" in text
        assert "Create" in text  # the key, in the footer
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, CreateDialog))
        dialog = app.screen
        error = dialog.query_one("#create-error", Static)
        # What is cheap to check is checked in the dialog, in one line.
        await pilot.press("enter")
        assert "a path is needed" in str(error.render())
        _fill(dialog, path=str(tmp_path / "missing.tar"))
        await pilot.press("enter")
        assert "no such file" in str(error.render())
        _fill(dialog, path=str(tarball), name="no/slash")
        await pilot.press("enter")
        assert "not a valid name" in str(error.render())
        # What the engine refuses is one notification, and nothing is made.
        _fill(dialog, name="fromtar", profile="no-such-profile")
        await pilot.press("enter")
        await until(pilot, lambda: any("create image:" in n and "no-such-profile" in n for n in notes(app)))
        assert not main.images_pane.images
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, CreateDialog))
        _fill(app.screen, path=str(tarball), name="fromtar")
        await pilot.press("enter")
        await until(pilot, lambda: "fromtar" in main.images_pane.table.model)
        await until(pilot, lambda: any("created image fromtar" in n for n in notes(app)))
        await until(pilot, lambda: not main.task_panel.display)
        assert main.images_pane.selected == "fromtar"

    drive(env, scenario)
    [image] = env.roost("image", "list", "--json").json()
    assert (image["name"], image["current"], image["profile"]) == ("fromtar", 1, "default")
    sid = env.begin("fromtar")
    assert env.sh(sid, "cat /etc/hostname").out == "busybox\n"
    env.ok("session", "end", sid)


def test_a_whole_mmdebstrap_create_from_the_console_shows_its_stages_and_makes_a_working_image(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    from textual.widgets import ProgressBar, Select

    from tui.widgets.create import CreateDialog, CreateTask

    if not shutil.which("mmdebstrap"):
        pytest.skip("mmdebstrap is not installed")
    # Every report the worker made, and what the panel showed while the console kept polling.
    reported: list[tuple[float | None, str]] = []
    report = CreateTask.report

    def recording_report(task: CreateTask, fraction: float | None, text: str) -> None:
        reported.append((fraction, text))
        report(task, fraction, text)

    monkeypatch.setattr(CreateTask, "report", recording_report)
    bars: list[float] = []
    subtitles: list[str] = []

    async def scenario(pilot: Pilot[Any], app: Console) -> None:
        main = app.main
        await until(pilot, lambda: main.active == "images")
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, CreateDialog))
        app.screen.query_one("#kind", Select).value = "mmdebstrap"
        await pilot.pause(0.1)
        _fill(app.screen, path="bookworm", variant="minbase", name="deb")
        await pilot.press("enter")
        await until(pilot, lambda: main.task_panel.display)
        assert "Creating deb from mmdebstrap bookworm (minbase variant)" in screen_text(app)
        panel = main.task_panel
        bar = panel.query_one("#task-bar", ProgressBar)
        # The console stays usable while mmdebstrap runs: keys switch panes, and back.
        await pilot.press("2")
        assert main.active == "sessions"
        await pilot.press("1")
        deadline = time.monotonic() + 900
        while panel.display:
            assert time.monotonic() < deadline, f"mmdebstrap still running after 900 s: {reported[-3:]}"
            if bar.total is not None:
                bars.append(bar.progress)
            if panel.border_subtitle and (not subtitles or subtitles[-1] != panel.border_subtitle):
                subtitles.append(str(panel.border_subtitle))
            await pilot.pause(0.1)
        await until(pilot, lambda: any("created image deb" in n for n in notes(app)), describe=lambda: str(notes(app)))
        await until(pilot, lambda: "deb" in main.images_pane.table.model)

    drive(env, scenario)
    # mmdebstrap's own lines reached the panel's log, and each stage moved the bar forward by name.
    texts = [text for _, text in reported]
    assert "running mmdebstrap bookworm" in texts
    stage_names = [text for text in texts if "(stage " in text]
    assert [t.split(" (stage ")[0] for t in stage_names] == rootfs.MMDEBSTRAP_STAGES, texts
    fractions = [f for f, _ in reported if f is not None]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert bars == sorted(bars) and len(set(bars)) >= 2, bars  # the bar was seen moving, never back
    assert any("(stage " in subtitle for subtitle in subtitles), subtitles
    # The image works: a session of it runs Debian's own tools.
    [image] = env.roost("image", "list", "--json").json()
    assert image["name"] == "deb" and image["current"] == 1
    history = env.roost("image", "history", "deb", "--json").json()
    assert history[0]["message"] == "created from mmdebstrap bookworm (minbase variant)"
    r = env.roost("run", "deb", "--", "/bin/sh", "-c", ". /etc/os-release; echo $VERSION_CODENAME; dpkg -s base-files")
    assert r.out.startswith("bookworm\nPackage: base-files\n"), r.err


def test_a_create_cancelled_midway_leaves_nothing_and_the_console_stays_usable(
    env: Env, busybox_tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    existing = frozenset(_children())  # the session's daemons are not this test's helpers
    import threading

    from tui.widgets.create import CreateDialog, CreateTask

    tarball = _tarball(busybox_tree, tmp_path)
    # The create's first progress report waits until the test has pressed cancel: gzip and tar run meanwhile.
    reported = threading.Event()
    cancel_pressed = threading.Event()
    helpers: list[list[int]] = []
    report = CreateTask.report

    def held_report(task: CreateTask, fraction: float | None, text: str) -> None:
        if not reported.is_set():
            helpers.append(_children(existing))
            reported.set()
            cancel_pressed.wait(60)
        report(task, fraction, text)

    monkeypatch.setattr(CreateTask, "report", held_report)

    async def scenario(pilot: Pilot[Any], app: Console) -> None:
        main = app.main
        await until(pilot, lambda: main.active == "images")
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, CreateDialog))
        _fill(app.screen, path=str(tarball), name="halfway")
        await pilot.press("enter")
        await until(pilot, reported.is_set)
        assert main.task_panel.display
        assert "Creating halfway" in screen_text(app)
        # The console answers keys and follows the state root while the create runs.
        await pilot.press("2")
        assert main.active == "sessions"
        await pilot.press("1")
        assert main.active == "images"
        env.ok("image", "create", "other", "--from-dir", str(busybox_tree))
        await until(pilot, lambda: "other" in main.images_pane.table.model)
        await pilot.press("ctrl+x")
        assert main.creating is not None and main.creating.cancelled
        cancel_pressed.set()
        await until(pilot, lambda: any("cancelled: nothing of image halfway was kept" in n for n in notes(app)))
        assert not main.task_panel.display
        assert main.creating is None

    drive(env, scenario)
    assert helpers and helpers[0], "gzip and tar were not running when the create was cancelled"
    assert _children(existing) == []
    assert [i["name"] for i in env.roost("image", "list", "--json").json()] == ["other"]
    assert not (env.state / "images" / "halfway").exists()
    assert os.listdir(env.state / "staging") == []
    assert not [n for n in os.listdir(env.run / "locks") if n.startswith("tx.")]
    assert not mounts_under(env.base)


def test_schroots_chroots_are_imported_from_the_console_after_a_summary(
    env: Env, busybox_tree: Path, tmp_path: Path
) -> None:
    from textual.widgets import Select

    from tui.widgets.create import CreateDialog

    tarball = _tarball(busybox_tree, tmp_path)
    schroot = tmp_path / "schroot"
    (schroot / "chroot.d").mkdir(parents=True)
    (schroot / "schroot.conf").write_text(f"[tarred]\ntype=file\nfile={tarball}\nfile-repack=true\n")
    (schroot / "chroot.d" / "copied").write_text(f"[copied]\ntype=directory\ndirectory={busybox_tree}\n")
    (schroot / "chroot.d" / "lvm").write_text("[lvm]\ntype=lvm-snapshot\ndevice=/dev/vg/x\n")

    async def scenario(pilot: Pilot[Any], app: Console) -> None:
        main = app.main
        await until(pilot, lambda: main.active == "images")
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, CreateDialog))
        app.screen.query_one("#kind", Select).value = "schroot"
        await pilot.pause(0.1)
        assert not app.screen.query_one("#image-fields").display  # the chroots name themselves
        _fill(app.screen, path=str(schroot))
        await pilot.press("enter")
        await shown(pilot, app, ConfirmDialog)
        dialog = app.screen
        assert isinstance(dialog, ConfirmDialog) and dialog.title_text == "Import 2 chroot(s)"
        lines = [str(line) for line in dialog.lines]
        # schroot.conf first, then chroot.d in order, as schroot reads them
        assert lines[1] == f"  • tarred → image tarred from tar {tarball}, 1 note(s)"  # file-repack
        assert lines[2].startswith(f"  • copied → image copied from dir {busybox_tree}")
        assert lines[3].startswith("  • lvm: not imported: type=lvm-snapshot is not supported")
        await pilot.press("y")
        await until(pilot, lambda: {"tarred", "copied"} <= set(main.images_pane.table.model))
        await until(pilot, lambda: any(n.startswith("imported ") for n in notes(app)))
        assert any(n.startswith("not imported: lvm:") for n in notes(app))

    drive(env, scenario)
    assert sorted(i["name"] for i in env.roost("image", "list", "--json").json()) == ["copied", "tarred"]
    sid = env.begin("tarred")
    assert env.sh(sid, "cat /etc/hostname").out == "busybox\n"
    env.ok("session", "end", sid)
