"""The console as an ordinary user, with no sudo: the real `roost` in a real terminal (tmux),
on the user's own rootless state: begin a session, enter it, come back, end it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.rootless import Rootless
from tests.test_tui_tmux import Tmux


class UserTmux(Tmux):
    """A tmux server run as the rootless user, its socket in the user's test directory."""

    def __init__(self, rl: Rootless, command: list[str]) -> None:
        self.rl = rl
        self.environ = rl.environ | {"TMUX_TMPDIR": str(rl.base)}
        super().__init__(rl, command)  # type: ignore[arg-type]

    def run(self, *args: str) -> str:
        proc = subprocess.run(
            self.rl.command("tmux", "-L", self.socket, "-f", "/dev/null", *args),
            env=self.environ,
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        )
        return proc.stdout

    def kill(self) -> None:
        subprocess.run(self.rl.command("tmux", "-L", self.socket, "kill-server"), env=self.environ, capture_output=True)
        if self.path:
            Path(self.path).unlink(missing_ok=True)


def test_the_console_as_an_ordinary_user_begins_enters_and_ends_a_rootless_session(rl_bb: Rootless) -> None:
    if not shutil.which("tmux"):
        pytest.skip("tmux is not installed")
    rl = rl_bb
    before = rl.host_mounts()
    tmux = UserTmux(rl, [sys.executable, "-m", "roost"])  # as the user already; no --user: theirs by default
    try:
        tmux.wait("Sessions")
        tmux.wait("bb")  # the user's own image, in the images pane
        tmux.keys("1")
        tmux.wait(lambda s: "Begin" in s and "Maintain" in s)
        tmux.keys("b")
        deadline = time.monotonic() + 30
        while not (listed := rl.sessions()):
            assert time.monotonic() < deadline, tmux.screen()
            time.sleep(0.1)
        sid = listed[0]["id"]
        tmux.wait(sid)
        tmux.wait(lambda s: "mounted" in s)  # its holder lives: the console says so, with no mount on the host
        assert rl.host_mounts() == before
        # enter: a login shell joined to the session's namespaces, the console stepping aside meanwhile
        tmux.keys("e")
        tmux.wait(lambda s: "Sessions" not in s and ("#" in s or "$" in s))
        tmux.type("echo ROOST_SESSION_ID=$ROOST_SESSION_ID uid=$(id -u)")
        tmux.keys("Enter")
        tmux.wait(f"ROOST_SESSION_ID={sid} uid={rl.user.uid}")  # the user keeps their own id inside
        tmux.type("exit")
        tmux.keys("Enter")
        tmux.wait(lambda s: "Sessions" in s and "back from session" in s)
        tmux.keys("d")
        tmux.wait("Lost for good")
        tmux.keys("y")
        tmux.wait(f"ended session {sid}")
        assert rl.sessions() == []
        tmux.keys("q")
        deadline = time.monotonic() + 10
        while (
            "console"
            in subprocess.run(
                rl.command("tmux", "-L", tmux.socket, "list-sessions"), env=tmux.environ, capture_output=True, text=True
            ).stdout
        ):
            assert time.monotonic() < deadline, "the console did not quit on q"
            time.sleep(0.1)
    finally:
        tmux.kill()
    assert json.loads(rl.ok("--json", "image", "list"))[0]["name"] == "bb"


def test_the_consoles_pilot_as_an_ordinary_user_begins_sessions_on_their_own_state(rl_bb: Rootless) -> None:
    rl = rl_bb
    before = rl.host_mounts()
    proc = subprocess.run(
        rl.command(sys.executable, "-m", "tests.rootless.console_pilot"),
        env=rl.environ,
        capture_output=True,
        text=True,
        timeout=300,
        cwd="/",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["engine"] == "RootlessEngine" and seen["images"] == ["bb"] and seen["errors"] == []
    listed = {s["id"]: s for s in rl.sessions()}
    assert {sid: [s["kind"], s["state"]] for sid, s in listed.items()} == seen["sessions"]
    assert sorted(kind for kind, _ in seen["sessions"].values()) == ["maintenance", "ordinary"]
    assert rl.host_mounts() == before  # mounted in their holders' namespaces, none on the host
    for sid in listed:
        rl.ok("session", "end", sid)
    assert rl.sessions() == []
