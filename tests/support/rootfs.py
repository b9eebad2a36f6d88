"""Root file systems for tests and benchmarks: busybox (fast) and Debian (realistic)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

BUSYBOX = "/bin/busybox"
CACHE = Path(os.environ.get("ROOST_TEST_CACHE", os.path.expanduser("~/.cache/roost-tests")))


def busybox(root: Path) -> Path:
    """A minimal root: static busybox with its applets, passwd, group, the usual dirs."""
    for d in ("bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "root", "home", "usr/bin", "var/tmp", "build"):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    os.chmod(root / "root", 0o700)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        if applet != "busybox" and not (root / "bin" / applet).exists():
            os.symlink("busybox", root / "bin" / applet)
    (root / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    )
    (root / "etc" / "group").write_text("root:x:0:\ntty:x:5:\nnogroup:x:65534:\n")
    (root / "etc" / "hostname").write_text("busybox\n")
    return root


def debian_tarball(suite: str = "bookworm", max_age_days: float = 7, variant: str = "minbase") -> Path:
    """A root of *suite* as a tar.zst, built with mmdebstrap and cached.

    *variant* is mmdebstrap's: ``buildd`` is what sbuild's unshare mode is
    documented to build in (minbase and build-essential).
    """
    CACHE.mkdir(parents=True, exist_ok=True)
    out = CACHE / f"{suite}-{variant}.tar.zst"
    if out.exists() and time.time() - out.stat().st_mtime < max_age_days * 86400:
        return out
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tar.zst")
    subprocess.run(
        ["mmdebstrap", f"--variant={variant}", "--mode=root", "--quiet", suite, str(tmp)],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    os.replace(tmp, out)
    return out


#: The stages mmdebstrap names on stderr, in order, as a whole run of bookworm announces them
#: (what roost shows as its progress bar's stages, at a terminal and in the console).
MMDEBSTRAP_STAGES = [
    "running apt-get update",
    "downloading packages with apt",
    "extracting archives",
    "installing essential packages",
    "installing remaining packages inside the chroot",
    "cleaning package lists and apt cache",
]
