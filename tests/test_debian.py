"""End to end on a real Debian root: apt inside a maintenance session, promoted for everyone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import rootfs
from tests.support.env import Env

pytestmark = pytest.mark.slow


def test_apt_install_in_maintenance_then_promote(env: Env, debian_tarball: Path) -> None:
    env.ok("image", "create", "bookworm", "--from-tar", str(debian_tarball), "--profile", "sbuild")
    sid = env.begin("bookworm", "--maintenance")
    r = env.sh(
        sid,
        "export DEBIAN_FRONTEND=noninteractive; apt-get -q update >/dev/null && "
        "apt-get install -q -y --no-install-recommends hello >/dev/null && hello",
        timeout=600,
    )
    assert r.code == 0 and r.out == "Hello, world!\n", r.err
    env.ok("session", "promote", sid, "-m", "install hello")

    user = env.begin("bookworm")
    r = env.sh(user, "hello; dpkg-query -W -f='${Status}\\n' hello")
    assert r.out == "Hello, world!\ninstall ok installed\n", r.err
    # dpkg in an ordinary session: changes stay in the session
    r = env.sh(user, "DEBIAN_FRONTEND=noninteractive dpkg --purge hello >/dev/null && command -v hello || echo purged")
    assert r.out == "purged\n", r.err
    env.ok("session", "end", user)

    # a second maintenance round removes it again; the history has both
    sid = env.begin("bookworm", "--maintenance")
    assert env.sh(sid, "DEBIAN_FRONTEND=noninteractive apt-get -q -y purge hello >/dev/null").code == 0
    env.ok("session", "promote", sid, "-m", "remove hello")
    history = env.roost("image", "history", "bookworm", "--json").json()
    assert [g["message"] for g in history][1:] == ["install hello", "remove hello"]
    r = env.roost("run", "bookworm", "--", "/bin/sh", "-c", "command -v hello || echo gone")
    assert r.out == "gone\n"
    env.ok("image", "rollback", "bookworm")
    r = env.roost("run", "bookworm", "--", "hello")
    assert r.out == "Hello, world!\n"
    env.ok("image", "remove", "bookworm")


def on_a_terminal(env: Env, *args: str, timeout: float) -> tuple[int, str, str]:
    """``roost ARGS`` with its stderr on a terminal (a pty): its exit code, stdout, and what the terminal got."""
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "roost", *args],
        env=env.environ, cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave,
    )  # fmt: skip
    os.close(slave)
    terminal = bytearray()
    try:
        while chunk := os.read(master, 65536):
            terminal += chunk
    except OSError:  # EIO: roost closed its end
        pass
    finally:
        os.close(master)
    assert proc.stdout is not None
    out = proc.stdout.read().decode()
    return proc.wait(timeout), out, terminal.decode(errors="replace")


def test_image_create_with_mmdebstrap(env: Env, debian_tarball: Path) -> None:
    # debian_tarball proves mmdebstrap works here; this drives it through roost itself, at a terminal
    code, _out, terminal = on_a_terminal(
        env, "image", "create", "deb", "--mmdebstrap", "bookworm", "--variant", "minbase", timeout=900
    )
    assert code == 0, terminal[-2000:]
    # mmdebstrap's progress is a bar with its stages by name, each drawn over the last
    drawn = [line for line in terminal.split("\r\x1b[K") if line.startswith("[")]
    stages = [line.split("% ", 1)[1] for line in drawn if "(stage " in line]
    assert [stage.split(" (stage ")[0] for stage in stages] == rootfs.MMDEBSTRAP_STAGES, drawn
    assert any(line.startswith("[######..............]  30% installing essential packages") for line in drawn)
    r = env.roost("run", "deb", "--", "/bin/sh", "-c", ". /etc/os-release; echo $VERSION_CODENAME")
    assert r.out == "bookworm\n", r.err
    history = env.roost("image", "history", "deb", "--json").json()
    assert history[0]["message"] == "created from mmdebstrap bookworm (minbase variant)"
