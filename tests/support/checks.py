"""State checks shared by the invariant and reliability tests."""

from __future__ import annotations

import os
from typing import Any

from tests.support import stats
from tests.support.mounts import mounts_under


def consistent(env: Any, *, cli: bool = True) -> None:
    """`roost doctor --check` finds nothing and no half-made leftovers are on disk.

    Mounts below the runtime root belong to listed sessions only. With
    ``cli=False`` the check runs in this process (the soak checks hundreds of
    states; the command is the same code behind one more interpreter start).
    """
    stats.bump("states checked")
    if cli:
        r = env.roost("doctor", "--check", "--json")
        problems = r.json()["problems"]
        assert (r.code == 0) == (not problems), r
    else:
        problems = env.engine().check()
    if problems:
        stats.bump("leaks found", len(problems))
    assert problems == [], problems
    for image in (env.state / "images").iterdir():
        for sub in ("staging", "trash"):
            assert not (image / sub).exists() or os.listdir(image / sub) == [], (image, sub)
    assert os.listdir(env.state / "staging") == [] and os.listdir(env.state / "trash") == []
    listed = {s.session.id for s in env.engine().list_sessions()}
    for target in mounts_under(env.run / "mnt"):
        sid = target[len(str(env.run / "mnt")) + 1 :].split("/", 1)[0]
        assert sid in listed, f"mount {target} belongs to no session"
