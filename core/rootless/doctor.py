"""``roost doctor`` for the rootless mode: what an ordinary user lacks, and how to get it.

Each check returns problems as one line each, saying what is missing and the
command that fixes it. The probes that cannot be judged from files (may this
user create a user namespace? will overlayfs mount in one, on the file system
of the state root?) are tried for real, in a child that leaves nothing
behind.
"""

from __future__ import annotations

import os
import stat

from ..errors import RoostError
from . import userns
from .ids import IdMap, for_user

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

_SYSCTLS = (
    # (file, value that refuses, how to allow)
    ("/proc/sys/kernel/unprivileged_userns_clone", "0", "sudo sysctl -w kernel.unprivileged_userns_clone=1"),
    ("/proc/sys/user/max_user_namespaces", "0", "sudo sysctl -w user.max_user_namespaces=15000"),
    (
        "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
        "1",
        "sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0 (or an AppArmor profile allowing userns)",
    ),
)


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return None


def kernel(sysctls: tuple[tuple[str, str, str], ...] = _SYSCTLS) -> list[str]:
    """Sysctls that forbid ordinary users their own user namespaces."""
    problems = []
    for path, refusing, fix in sysctls:
        if _read(path) == refusing:
            name = path.removeprefix("/proc/sys/").replace("/", ".")
            problems.append(f"the kernel refuses user namespaces to ordinary users ({name} = {refusing}): {fix}")
    return problems


def helpers() -> list[str]:
    """newuidmap and newgidmap: installed, and setuid root (or with the file capability to set ids)."""
    problems = []
    for name, cap in (("newuidmap", "setuid"), ("newgidmap", "setgid")):
        path = next((f"{d}/{name}" for d in ("/usr/bin", "/bin") if os.path.exists(f"{d}/{name}")), None)
        if path is None:
            problems.append(f"{name} is missing: sudo apt-get install uidmap")
            continue
        st = os.stat(path)
        setuid_root = st.st_uid == 0 and st.st_mode & stat.S_ISUID
        if not setuid_root and not _has_file_caps(path):
            problems.append(
                f"{path} is neither setuid root nor given cap_{cap}: sudo chmod u+s {path} "
                "(or sudo apt-get install --reinstall uidmap)"
            )
    return problems


def _has_file_caps(path: str) -> bool:
    try:
        return bool(os.getxattr(path, "security.capability"))
    except OSError:
        return False


def ranges(user: str, uid: int, gid: int, *, subuid: str = "/etc/subuid", subgid: str = "/etc/subgid") -> list[str]:
    """The user's subordinate id ranges."""
    try:
        for_user(user, uid, gid, subuid=subuid, subgid=subgid)
    except RoostError as e:
        return [e.message]
    return []


def probe_namespace(idmap: IdMap) -> list[str]:
    """Create and map a user namespace for real."""
    try:
        userns.run_mapped(idmap, lambda: None)
    except RoostError as e:
        return [f"cannot create a mapped user namespace: {e.message}"]
    return []


def probe_overlay(idmap: IdMap, directory: str) -> list[str]:
    """Mount a userxattr overlay in a user namespace on the file system of *directory* (made, then removed)."""
    import tempfile

    from .setup import OVERLAY_OPTIONS

    base = tempfile.mkdtemp(prefix=".roost-doctor-", dir=directory)

    def inside() -> None:
        from .. import syscalls

        for name in ("lower", "upper", "work", "mnt"):
            os.mkdir(os.path.join(base, name), 0o755)
        with open(os.path.join(base, "lower", "file"), "w") as f:
            f.write("lower\n")
        syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_SLAVE)
        data = f"lowerdir={base}/lower,upperdir={base}/upper,workdir={base}/work,{OVERLAY_OPTIONS}"
        syscalls.mount("overlay", f"{base}/mnt", "overlay", 0, data)
        os.unlink(f"{base}/mnt/file")  # a whiteout: the upper must take user.* attributes and a 0/0 node
        syscalls.umount(f"{base}/mnt")

    try:
        userns.run_mapped(idmap, inside, flags=userns.CLONE_NEWNS)
    except RoostError as e:
        fstype = _fstype(directory)
        return [
            f"overlayfs does not mount in a user namespace on {directory} ({fstype}): {e.message}; "
            "rootless roost needs Linux 5.11 or later and a state root on a file system with user.* "
            "extended attributes (ext4, xfs, btrfs; tmpfs from Linux 6.6): set state-root in "
            "~/.config/roost/roost.yaml"
        ]
    finally:
        from . import content

        try:
            content.discard(base, idmap)
        except RoostError:
            pass
    return []


def _fstype(path: str) -> str:
    from ..mounts import containing

    m = containing(os.path.realpath(path))
    return m.fstype if m is not None else "unknown file system"


def check(idmap_of: Callable[[], IdMap], user: str, uid: int, gid: int, state_root: str) -> list[str]:
    """Every problem that stops *user* from using rootless roost, each with its fix; [] when none."""
    problems = kernel() + helpers() + ranges(user, uid, gid)
    if problems:
        return problems  # the probes would only fail again, less clearly
    idmap = idmap_of()
    problems = probe_namespace(idmap)
    if problems:
        return problems
    where = existing_parent(state_root)
    if not os.access(where, os.W_OK):
        return [f"{state_root} cannot be made: {where} is not writable (set state-root in ~/.config/roost/roost.yaml)"]
    return probe_overlay(idmap, where)


def existing_parent(path: str) -> str:
    """*path*, or its nearest ancestor that exists (the probe runs there and changes nothing else)."""
    path = os.path.abspath(path)
    while not os.path.isdir(path) and path != "/":
        path = os.path.dirname(path)
    return path
