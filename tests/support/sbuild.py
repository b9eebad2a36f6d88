"""sbuild as the tests drive it: a front door bound to a test's state root, sbuild run with a clean
environment, and `schroot -i` output read the way sbuild reads it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.support.env import Env


def front_door(env: Env, base: Path) -> Path:
    """What a build host points sbuild at: here a launcher bound to the test's state root.

    sbuild clears the environment of the commands it runs, so the roots are
    set in the launcher itself (an installed roost-schroot needs nothing).
    """
    launcher = base / "roost-schroot"
    exports = " ".join(f"{k}={v}" for k, v in env.environ.items() if k.startswith("ROOST_") or k == "PYTHONPATH")
    launcher.write_text(f'#!/bin/sh\nexport {exports}\nexec {sys.executable} -m roost schroot "$@"\n')
    launcher.chmod(0o755)
    return launcher


def sbuild(config: Path, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    environ = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "SBUILD_CONFIG": str(config),
    }
    return subprocess.run(
        list(args), cwd=out, env=environ, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=1800
    )


def sbuild_info(out: str) -> list[dict[str, str]]:
    """`schroot -i` output as sbuild's ChrootInfoSchroot.get_info_from_stream reads it."""
    found = []
    for block in out.split("\n\n"):
        info = {"Namespace": "", "Name": "", "Location": "", "Session Purged": "0", "Aliases": ""}
        for line in block.splitlines():
            m = re.match(r"^\s*(───|---) (Chroot|Session|Source) \1$", line)
            if m and not info["Namespace"]:
                info["Namespace"] = m.group(2).lower()
            for key in ("Name", "Aliases"):
                m = re.match(rf"^\s*{key}:?\s+(.*)$", line)
                if m and (key != "Name" or not info["Name"]):
                    info[key] = m.group(1)
            m = re.match(r"^\s*(Location|Mount Location|Path):?\s+(.*)$", line)
            if m and (m.group(1) == "Path" or not info["Location"]):
                info["Location"] = m.group(2)
            m = re.match(r"^\s*Session Purged\s+(.*)$", line)
            if m:
                info["Session Purged"] = "1" if m.group(1) == "true" else "0"
        if info["Name"]:
            found.append(info)
    return found
