"""The console with several hosts: a real sshd on 127.0.0.1, three state roots as hosts (tests/test_fleet.py's).

The console runs on host a (its own engine) and shows b and c, reached over
ssh as ``roost --host`` reaches them. Mid-test c stops answering (its ssh
connection is frozen with SIGSTOP, as a host that hangs would be): the Hosts
pane says so within seconds, while keys and the actions on b keep working.
Every test asserts on the hosts' state afterwards, not only on the screen.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from core import fleet as corefleet
from core import hosts as corehosts
from core import ssh
from core.fleet import HostStatus
from tests.support.env import need_root
from tests.support.sshd import Sshd
from tests.test_fleet import Fleet, busybox, close_fleet, make_fleet
from tests.test_tui import Console, screen_text, until
from tui.fleet import FleetScreen
from tui.widgets.dialogs import ConfirmDialog, OutputDialog
from tui.widgets.help import HelpScreen
from tui.widgets.hosts import LOCAL


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    need_root()
    s = Sshd(tmp_path_factory.mktemp("sshd"))
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def three(server: Sshd, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Fleet]:
    """Hosts a, b and c, each with image bb; this process reaches them as the console would."""
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="roost-fleetui-", dir=tmp_path_factory.getbasetemp()))
    f = make_fleet(server, base, {n: base / n for n in ("a", "b", "c")})
    # Hosts behind one sshd share one ssh connection (same address, port and options); c gets one
    # of its own, as a host elsewhere would, so that freezing it leaves b's alone.
    f.add_host("c", f["c"], **{"ssh-options": {**server.ssh_options(), "ConnectionAttempts": "1"}})
    monkeypatch.setenv("ROOST_HOSTS", str(f.hosts_file))
    monkeypatch.setenv("ROOST_SSH_DIR", str(f.control))
    try:
        yield f
    finally:
        close_fleet(f)


def sessions(f: Fleet, name: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = f[name].roost("session", "list", "--json").json()
    return out


def master_pid(host: corehosts.Host) -> int:
    """The pid of the ssh master connection to *host* (started by the console's polls)."""
    conn = ssh.Connection(host, batch=True)
    proc = subprocess.run(
        [*conn.options(master="no"), "-O", "check", "--", host.destination],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    found = re.search(r"pid=(\d+)", proc.stderr)
    assert found, proc.stderr
    return int(found.group(1))


def run_console(f: Fleet, scenario: Any, *, size: tuple[int, int] = (160, 48)) -> Console:
    known = corehosts.load()
    app = Console(
        f["a"].engine(),
        host="host-a",
        interval=0.1,
        usage_interval=0.3,
        hosts=[known.hosts["b"], known.hosts["c"]],
        host_interval=0.5,
        host_timeout=2.0,
    )

    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            await until(pilot, lambda: app.loaded)
            await scenario(pilot, app)
            await app.workers.wait_for_complete()

    asyncio.run(main())
    return app


def row(app: Console, name: str) -> Any:
    return app.remote.get(name)


def test_hosts_pane_actions_run_on_the_highlighted_host_and_a_host_that_stops_answering_is_shown_unreachable(
    three: Fleet, busybox_tree: Path
) -> None:
    f = three
    busybox(f, busybox_tree, "a", "b", "c")
    frozen: list[int] = []
    seen: dict[str, float] = {}

    async def scenario(pilot: Pilot[Any], app: Console) -> None:
        main = app.main
        assert isinstance(main, FleetScreen)
        up = lambda name: (r := row(app, name)) is not None and r.reachable and r.view is not None  # noqa: E731
        await until(pilot, lambda: up("b") and up("c"), describe=lambda: str(app.remote))
        keys = list(main.hosts_pane.table.model)
        assert keys == [LOCAL, "b", "c"], keys  # this host first
        text = screen_text(app)
        assert "host-a" in text and "Hosts" in text and "up" in text

        # Highlight b: the panes show b, and begin runs there (not here).
        await pilot.press("0", "down")
        await until(pilot, lambda: main.viewing == "b")
        await until(pilot, lambda: "bb" in main.images_pane.images)
        assert main.images_pane.border_title == "Images on b"
        await pilot.press("1", "b")
        await until(pilot, lambda: len(sessions(f, "b")) == 1, describe=lambda: str(app.notes[-3:]))
        assert sessions(f, "a") == [] and sessions(f, "c") == []
        sid = sessions(f, "b")[0]["id"]
        await until(pilot, lambda: sid in main.sessions_pane.sessions, describe=lambda: str(app.notes[-3:]))
        # History of b's image, read over ssh.
        await until(pilot, lambda: [g.generation for g in main.history_pane.generations] == [1])

        # c stops answering: its connection is frozen. The Hosts pane says so within seconds.
        c = corehosts.load().hosts["c"]
        pid = master_pid(c)
        os.kill(pid, signal.SIGSTOP)
        frozen.append(pid)
        stopped = time.monotonic()
        await until(pilot, lambda: row(app, "c").reachable is False, timeout=15, describe=lambda: str(row(app, "c")))
        seen["unreachable after"] = time.monotonic() - stopped
        assert "unreachable" in screen_text(app)

        # Keys keep working meanwhile, and so do actions on b: end b's session from the console.
        for pane in ("images", "locks", "sessions"):
            await pilot.press({"images": "1", "locks": "4", "sessions": "2"}[pane])
            assert main.active == pane
        main.sessions_pane.table.select_key(sid)
        await pilot.press("d")
        await until(
            pilot,
            lambda: isinstance(app.screen, ConfirmDialog),
            describe=lambda: f"{main.viewing} {list(main.sessions_pane.sessions)} {main.sessions_pane.selected}",
        )
        assert f"End {sid} on b" in screen_text(app)
        await pilot.press("y")
        await until(pilot, lambda: sessions(f, "b") == [], describe=lambda: str(app.notes[-3:]))
        await until(pilot, lambda: any(f"ended session {sid} on b" in m for m, _ in app.notes))

        # c, while unreachable, keeps its last answer, marked as such; an action there says why it failed.
        await pilot.press("0", "down")
        await until(pilot, lambda: main.viewing == "c")
        assert "unreachable" in (main.images_pane.border_title or "")
        await pilot.press("1", "b")
        await until(pilot, lambda: any(s == "error" and "c is unreachable" in m for m, s in app.notes))
        assert sessions(f, "c") == []
        assert row(app, "c").reachable is False

        # Back to this host: the panes show a's state, and begin runs here through the engine.
        await pilot.press("0", "up", "up")
        await until(pilot, lambda: main.viewing is None)
        await pilot.press("1", "b")
        await until(pilot, lambda: len(sessions(f, "a")) == 1)
        local = sessions(f, "a")[0]["id"]
        await until(pilot, lambda: local in main.sessions_pane.sessions)
        assert main.images_pane.border_title == "Images"

        # c answers again: shown as up.
        os.kill(pid, signal.SIGCONT)
        frozen.remove(pid)
        await until(pilot, lambda: row(app, "c").reachable is True, timeout=30, describe=lambda: str(row(app, "c")))

    try:
        run_console(f, scenario)
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    assert seen["unreachable after"] < 15
    assert [s["image"] for s in sessions(f, "a")] == ["bb"]
    assert sessions(f, "b") == [] and sessions(f, "c") == []
    print(f"c was shown unreachable {seen['unreachable after']:.1f} s after it stopped answering")


def test_promote_and_rollback_on_another_host_change_that_hosts_image(three: Fleet, busybox_tree: Path) -> None:
    f = three
    busybox(f, busybox_tree, "a", "b")
    sid = f["b"].begin("bb", "--maintenance")
    assert f["b"].sh(sid, "echo hello > /etc/hello").code == 0

    async def scenario(pilot: Pilot[Any], app: Console) -> None:
        main = app.main
        assert isinstance(main, FleetScreen)
        await until(pilot, lambda: row(app, "b") is not None and row(app, "b").view is not None)
        await pilot.press("0", "down")
        await until(pilot, lambda: sid in main.sessions_pane.sessions)
        await pilot.press("2")
        main.sessions_pane.table.select_key(sid)
        # run: the command runs in b's session, its output streamed back over ssh.
        await pilot.press("x")
        await until(pilot, lambda: type(app.screen).__name__ == "PromptDialog")
        await pilot.press(*"cat /etc/hello", "enter")
        await until(pilot, lambda: isinstance(app.screen, OutputDialog) and app.screen.finished)
        await pilot.pause(0.2)
        assert "hello" in screen_text(app) and "done (exit status 0)" in screen_text(app)
        await pilot.press("escape")
        # enter: ssh -t in the suspended terminal; where it cannot be handed over, the command to type.
        await pilot.press("e")
        await until(pilot, lambda: any(f"roost --host b session enter {sid}" in m for m, _ in app.notes))
        await pilot.press("p")
        await until(pilot, lambda: type(app.screen).__name__ == "PromptDialog")
        await pilot.press(*"add hello", "enter")
        await until(pilot, lambda: int(f["b"].roost("image", "info", "bb", "--json").json()["current"]) == 2)
        await until(pilot, lambda: [g.generation for g in main.history_pane.generations] == [1, 2], timeout=30)
        # Roll b's bb back to 1 from the History pane.
        await pilot.press("3")
        main.history_pane.table.select_key("1")
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("y")
        await until(pilot, lambda: int(f["b"].roost("image", "info", "bb", "--json").json()["current"]) == 1)

    run_console(f, scenario)
    history = f["b"].roost("image", "history", "bb", "--json").json()
    assert [g["message"] for g in history if g["generation"] == 2] == ["add hello"]
    assert int(f["a"].roost("image", "info", "bb", "--json").json()["current"]) == 1  # a untouched


# --- what another host answers is shown, never obeyed (no ssh needed) ----------------------


HOSTILE: list[tuple[str, HostStatus]] = [
    ("x1", HostStatus("x1", True, 0.1, summary={"images": "nope"})),
    ("x2", HostStatus("x2", True, 0.1, summary={"images": [{"name": "../../etc", "backend": "dir", "current": 1}]})),
    ("x3", HostStatus("x3", True, 0.1, error="\x1b[2J\x1b]0;owned\x07" + "A" * 100_000 + "\nsecond line")),
    ("x4", HostStatus("x4", True, 0.1, summary={"images": [], "sessions": [{}] * 10_000})),
    (
        "x5",
        HostStatus(
            "x5",
            True,
            0.1,
            summary={
                "host": "evil\x1b[31m\nhost",
                "load": [1.5, 1, 0],
                "images": [{"name": "img", "backend": "overlay\x1b[2J", "current": 3, "description": "\x00" * 9}],
            },
        ),
    ),
]


def test_hostile_answers_are_one_line_and_never_crash_the_console(bb: Any) -> None:
    by_name = dict(HOSTILE)
    hosts = [corehosts.Host(name=n, address="192.0.2.1") for n in by_name]

    def poll(host: corehosts.Host) -> HostStatus:
        return by_name[host.name]

    app = Console(bb.engine(), host="host-a", interval=0.1, hosts=hosts, poll_host=poll, host_interval=0.2)

    async def main() -> None:
        async with app.run_test(size=(160, 48)) as pilot:
            await until(pilot, lambda: app.loaded and len(app.remote) == len(hosts))
            rows = app.remote
            assert rows["x1"].error is not None and rows["x1"].view is None
            assert rows["x2"].error is not None and "name" in rows["x2"].error
            assert rows["x4"].error is not None and "more than" in rows["x4"].error
            for r in rows.values():
                assert r.error is None or (r.error.isprintable() and len(r.error) <= 200), r.error
            assert rows["x5"].view is not None and rows["x5"].view.hostname == "evil [31m host"
            assert rows["x5"].view.images["img"].backend == "overlay [2J"
            await pilot.press("0", *["down"] * 5)
            await until(
                pilot,
                lambda: app.main.images_pane.images.keys() == {"img"},
                describe=lambda: f"{app.main.viewing} {app.main.hosts_pane.selected} {app.main.active} {app.focused}",
            )
            await pilot.press("1", "2", "3", "4", "0")  # keys keep working
            await pilot.press("question_mark")
            await until(pilot, lambda: isinstance(app.screen, HelpScreen))
            await pilot.pause(0.2)
            assert "Hosts (0)" in screen_text(app)
            await pilot.press("escape")
            text = screen_text(app)
            assert "\x1b" not in text and "owned" in text  # the escape is gone, its text shown as text

    asyncio.run(main())


def test_summary_view_refuses_what_is_not_a_summary() -> None:
    with pytest.raises(ValueError, match="not a list"):
        corefleet.view({"locks": {"a": 1}})
    with pytest.raises(ValueError, match="load"):
        corefleet.view({"load": "high"})
    with pytest.raises(ValueError, match="generation"):
        corefleet.history([{"generation": "1"}])
    assert corefleet.clean("a\x1b[31mb\n\tc" + "x" * 500).startswith("a [31mb c")
    assert len(corefleet.clean("x" * 500)) == 200


def test_console_host_options_are_checked_like_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tui.app import run_console as run

    monkeypatch.setenv("ROOST_HOSTS", str(tmp_path / "hosts.yaml"))  # none: nothing of /etc/roost is read
    assert run(hosts=["-oProxyCommand=x", "b"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid host" in err
    assert run(hosts=["nosuchhost"]) == 4
    assert "no host 'nosuchhost'" in capsys.readouterr().err
