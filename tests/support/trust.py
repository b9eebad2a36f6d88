"""The trust model's cast and what its tests check: image grants, state fingerprints, one-line refusals.

tests/security/conftest.py makes the ``cast`` fixture (real users, a sudo rule) from these.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.support import sudo


@dataclass
class Cast:
    inst: sudo.Installation
    eve: str
    bob: str
    gus: str
    rita: str
    ada: str
    builders: str
    admins: str


def grant(inst: sudo.Installation, image: str, **lists: list[str]) -> None:
    """Edit image.yaml as an operator would (users, groups, root-users, aliases …)."""
    path = inst.state / "images" / image / "image.yaml"
    data = yaml.safe_load(path.read_text())
    for key, value in lists.items():
        data[key.replace("_", "-")] = value
    path.write_text(yaml.safe_dump(data))


def fingerprint(root: Path) -> dict[str, str]:
    """Every file and link below *root* with a digest of what it holds (directories by name)."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in ("mnt",)]
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            if name.endswith((".lock",)) or ".wait-" in name or "/cache/" in f"/{rel}":
                continue  # lock files and parse caches come and go with every command
            if os.path.islink(path):
                out[rel] = "-> " + os.readlink(path)
            elif os.path.isfile(path):
                with open(path, "rb") as f:
                    out[rel] = hashlib.sha256(f.read()).hexdigest()
    return out


def state_fingerprint(inst: sudo.Installation) -> dict[str, str]:
    """The state root minus the journal (a refused operation may say so there)."""
    found = fingerprint(inst.state)
    found.pop("journal.jsonl", None)
    return found


def refused(result: object, code: int = 2, words: str = "") -> None:
    """One clear line on stderr, the exit code, no traceback."""
    r = result  # tests.support.env.Result
    err: str = r.err  # type: ignore[attr-defined]
    assert r.code == code, (r.code, err)  # type: ignore[attr-defined]
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("roost: "), err
    assert words in lines[0], (words, err)
