"""Images as tests look at them: a digest of a whole state tree, and an image's configuration edited in place."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import yaml

from tests.support.env import Env


def snapshot(root: Path) -> str:
    """A digest of every name, type, mode, owner, size, link target and content below *root*."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in sorted(os.walk(root)):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            h.update(f"{os.path.relpath(path, root)} {st.st_mode} {st.st_uid} {st.st_size}".encode())
            if os.path.islink(path):
                h.update(os.readlink(path).encode())
            elif os.path.isfile(path):
                with open(path, "rb") as f:
                    h.update(f.read())
    return h.hexdigest()


def set_config(env: Env, image: str, **values: object) -> None:
    path = env.state / "images" / image / "image.yaml"
    config = yaml.safe_load(path.read_text())
    config.update({k.replace("_", "-"): v for k, v in values.items()})
    path.write_text(yaml.safe_dump(config))


def promote_version(env: Env, n: int) -> None:
    """A new generation of image bb whose /etc/version says *n* (a maintenance session, promoted)."""
    sid = env.begin("bb", "--maintenance")
    env.sh(sid, f"echo {n} > /etc/version")
    env.ok("session", "promote", sid, "-m", f"version {n}")
