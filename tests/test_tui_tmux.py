"""The real `roost` binary in a real terminal (tmux): open the console, begin a session, enter it,
run a command in its shell, come back to the console, end the session."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.env import Env


class Tmux:
    """A tmux server of our own (its own socket), one window 120x40."""

    def __init__(self, env: Env, command: list[str]) -> None:
        self.socket = f"roost-test-{os.getpid()}-{time.monotonic_ns()}"
        self.env = env
        self.run("new-session", "-d", "-s", "console", "-x", "120", "-y", "40", *command)
        self.path = self.run("display-message", "-p", "#{socket_path}").strip()

    def run(self, *args: str) -> str:
        proc = subprocess.run(
            ["tmux", "-L", self.socket, "-f", "/dev/null", *args],
            env=self.env.environ,
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        )
        return proc.stdout

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "console")

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", "console", *keys)

    def type(self, text: str) -> None:
        self.run("send-keys", "-t", "console", "-l", text)

    def wait(self, what: str | Callable[[str], bool], timeout: float = 30.0) -> str:
        test = (lambda s: what in s) if isinstance(what, str) else what
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if test(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what!r}; the terminal shows:\n{screen}")
            time.sleep(0.1)

    def kill(self) -> None:
        """Stop the server (if the console's exit has not already) and remove its socket."""
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], env=self.env.environ, capture_output=True)
        if self.path:
            Path(self.path).unlink(missing_ok=True)


@pytest.fixture
def mini(env: Env, busybox_tree: Path) -> Iterator[Env]:
    """Image `mini` with the minimal profile: /tmp in its sessions is their own."""
    if not shutil.which("tmux"):
        pytest.skip("tmux is not installed")
    env.ok("image", "create", "mini", "--from-dir", str(busybox_tree), "--profile", "minimal")
    yield env
    for s in env.roost("session", "list", "--json").json():
        env.ok("session", "end", s["id"], "--force")


def roost_command() -> list[str]:
    installed = Path(sys.executable).parent / "roost"
    return [str(installed)] if installed.exists() else [sys.executable, "-m", "roost"]


def test_console_in_tmux_begin_enter_run_exit_end(mini: Env) -> None:
    env = mini
    tmux = Tmux(env, roost_command())
    try:
        tmux.wait("Sessions")
        tmux.wait("mini")  # the images pane has the image
        tmux.keys("1")
        tmux.wait(lambda s: "Begin" in s and "Maintain" in s)  # the footer shows the image verbs
        tmux.keys("b")
        deadline = time.monotonic() + 30
        while not (listed := env.roost("session", "list", "--json").json()):
            assert time.monotonic() < deadline, tmux.screen()
            time.sleep(0.1)
        sid = listed[0]["id"]
        tmux.wait(sid)
        # enter: the console steps aside for a login shell inside the session
        tmux.keys("e")
        tmux.wait(lambda s: "Sessions" not in s and ("#" in s or "$" in s))
        tmux.type("echo inside > /tmp/x; echo ROOST_SESSION_ID=$ROOST_SESSION_ID")
        tmux.keys("Enter")
        tmux.wait(f"ROOST_SESSION_ID={sid}")
        tmux.type("exit")
        tmux.keys("Enter")
        tmux.wait(lambda s: "Sessions" in s and "back from session" in s)
        assert env.sh(sid, "cat /tmp/x").out == "inside\n"
        # end it, after the confirmation
        tmux.keys("d")
        tmux.wait("Lost for good")
        tmux.keys("y")
        tmux.wait(f"ended session {sid}")
        assert env.roost("session", "list", "--json").json() == []
        tmux.keys("q")
        deadline = time.monotonic() + 10
        while (
            "console"
            in subprocess.run(
                ["tmux", "-L", tmux.socket, "list-sessions"], env=env.environ, capture_output=True, text=True
            ).stdout
        ):
            assert time.monotonic() < deadline, "the console did not quit on q"
            time.sleep(0.1)
    finally:
        tmux.kill()
