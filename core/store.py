"""Where everything lives: the state root and the runtime root (DESIGN.md §3).

::

    <state>/images/<image>/image.yaml
    <state>/images/<image>/generations/<n>/          (0700: the backend's data)
    <state>/images/<image>/generations/<n>.yaml      metadata; its presence commits <n>
    <state>/images/<image>/current -> generations/<n>
    <state>/images/<image>/writer.json              writer lease (maintenance session)
    <state>/images/<image>/staging/<tx>/            a generation being built
    <state>/images/<image>/trash/<tx>/              generations on their way out
    <state>/sessions/<id>.json                      session record
    <state>/sessions/<id>/                          the session's clone (backend data)
    <state>/staging/<tx>/                           an image being created
    <state>/trash/<tx>/                             an image being removed
    <state>/journal.jsonl
    <run>/mnt/<id>/                                 where a session's root is mounted
    <run>/locks/                                    flock files (root, 0700)
    <run>/cache/                                    parsed YAML as JSON (root, 0700)
"""

from __future__ import annotations

import os

from .names import check_object_name
from .settings import Settings


def new_tx() -> str:
    """A transaction id for staging and trash entries: sortable, unique, a valid name."""
    import time

    return f"{int(time.time() * 1000):x}-{os.getpid()}-{os.urandom(3).hex()}"


class Store:
    """Paths of the state and runtime roots. Pure: creates nothing until :meth:`ensure`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.state_root
        self.run = settings.run_root
        self.images_dir = os.path.join(self.root, "images")
        self.sessions_dir = os.path.join(self.root, "sessions")
        self.staging_dir = os.path.join(self.root, "staging")
        self.trash_dir = os.path.join(self.root, "trash")
        self.journal_path = os.path.join(self.root, "journal.jsonl")
        self.mnt_dir = os.path.join(self.run, "mnt")
        self.stage_dir = os.path.join(self.mnt_dir, ".stage")
        self.lock_dir = os.path.join(self.run, "locks")
        self.cache_dir = os.path.join(self.run, "cache")

    # --- creation ---------------------------------------------------------------

    def ensure(self) -> None:
        """Create the state and runtime roots (idempotent; needs root), and check they may be trusted."""
        from .fsutil import ensure_dir
        from .locks import ensure_lock_dir

        self.check_trusted()
        os.makedirs(self.root, mode=0o755, exist_ok=True)
        for path in (self.images_dir, self.sessions_dir):
            ensure_dir(path, 0o755)
        for path in (self.staging_dir, self.trash_dir):
            ensure_dir(path, 0o700)
        os.makedirs(self.run, mode=0o755, exist_ok=True)
        # Session roots are mounted below mnt/<id>/: only a session's owner may reach into it (sbuild
        # checks that its session's root exists), nobody else (an image's setuid programs would run on
        # the host). mnt/ itself may only be walked through; mnt/.stage/ holds promote's and export's
        # scratch mounts and is root's alone.
        ensure_dir(self.mnt_dir, 0o711, exact=True)
        ensure_dir(self.stage_dir, 0o700, exact=True)
        ensure_lock_dir(self.lock_dir)
        ensure_lock_dir(self.cache_dir, "cache directory")
        self.check_trusted()

    def trusted_dirs(self) -> list[tuple[str, str]]:
        """(directory, what) for every directory whose contents roost acts on as root."""
        return [
            (self.root, "state root"),
            (self.images_dir, "image directory"),
            (self.sessions_dir, "session directory"),
            (self.run, "runtime root"),
            (self.mnt_dir, "mount directory"),
            (self.stage_dir, "scratch mount directory"),
            (self.lock_dir, "lock directory"),
        ]

    def check_trusted(self) -> None:
        """Refuse roots that anyone but us could change (see :mod:`core.trust`); a missing one is fine."""
        from .trust import check_dir

        for path, what in self.trusted_dirs():
            check_dir(path, what)

    def problems(self) -> list[str]:
        """What makes the roots unsafe, one line each (for ``roost doctor --check``)."""
        import stat

        from .trust import dir_problem

        out = []
        for path, what in self.trusted_dirs():
            why = dir_problem(path)
            if why is not None:
                out.append(f"{what} {path}: {why}")
        for path, allowed, want in ((self.mnt_dir, 0o011, "0711"), (self.stage_dir, 0, "0700")):
            try:
                mode = stat.S_IMODE(os.lstat(path).st_mode)
            except FileNotFoundError:
                continue
            if mode & 0o077 & ~allowed:
                out.append(
                    f"mount directory {path}: others may list or reach what is mounted (mode {mode:04o}, want {want})"
                )
        try:
            gates = [e for e in os.scandir(self.mnt_dir) if not e.name.startswith(".")]
        except FileNotFoundError:
            gates = []
        for entry in gates:
            st = entry.stat(follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode) or (st.st_uid != 0 and st.st_uid != os.geteuid()) or st.st_mode & 0o007:
                out.append(f"session directory {entry.path}: open to others (mode {stat.S_IMODE(st.st_mode):04o})")
        return out

    # --- images -----------------------------------------------------------------

    def image_dir(self, image: str) -> str:
        return os.path.join(self.images_dir, check_object_name(image, "image name"))

    def image_yaml(self, image: str) -> str:
        return os.path.join(self.image_dir(image), "image.yaml")

    def generations_dir(self, image: str) -> str:
        return os.path.join(self.image_dir(image), "generations")

    def generation_dir(self, image: str, number: int) -> str:
        return os.path.join(self.generations_dir(image), str(number))

    def generation_meta(self, image: str, number: int) -> str:
        return os.path.join(self.generations_dir(image), f"{number}.yaml")

    def current_link(self, image: str) -> str:
        return os.path.join(self.image_dir(image), "current")

    def writer_lease(self, image: str) -> str:
        return os.path.join(self.image_dir(image), "writer.json")

    def image_staging(self, image: str) -> str:
        return os.path.join(self.image_dir(image), "staging")

    def image_trash(self, image: str) -> str:
        return os.path.join(self.image_dir(image), "trash")

    def image_names(self) -> list[str]:
        from .names import is_reserved, is_valid_name

        try:
            entries = list(os.scandir(self.images_dir))
        except FileNotFoundError:
            return []
        return sorted(
            e.name
            for e in entries
            if is_valid_name(e.name) and not is_reserved(e.name) and e.is_dir(follow_symlinks=False)
        )

    # --- sessions ---------------------------------------------------------------

    def session_record(self, session: str) -> str:
        return os.path.join(self.sessions_dir, check_object_name(session, "session id") + ".json")

    def session_clone(self, session: str) -> str:
        return os.path.join(self.sessions_dir, check_object_name(session, "session id"))

    def session_gate(self, session: str) -> str:
        """``<run>/mnt/<id>``: root's, mode 0700, with an ACL letting the session's owner (only) through."""
        return os.path.join(self.mnt_dir, check_object_name(session, "session id"))

    def mountpoint(self, session: str) -> str:
        """Where the session's root is mounted: ``<run>/mnt/<id>/root``."""
        return os.path.join(self.session_gate(session), "root")

    def legacy_mountpoint(self, session: str) -> str:
        """Where sessions begun before session directories had a gate are mounted: ``<run>/mnt/<id>``."""
        return self.session_gate(session)

    # --- locks ------------------------------------------------------------------

    @staticmethod
    def image_lock_name(image: str) -> str:
        return f"image.{image}"

    @staticmethod
    def session_lock_name(session: str) -> str:
        return f"session.{session}"

    @staticmethod
    def tx_lock_name(tx: str) -> str:
        return f"tx.{tx}"
