"""The engine: the one way in for every front door (CLI, console, batch, schroot).

Locking, validation and journaling happen here and in the modules it
delegates to (:mod:`core.images`, :mod:`core.sessions`, :mod:`core.recover`);
front doors only parse and print.
"""

from __future__ import annotations

import os

from . import images, journal, locks, mounts, sessions
from .actor import Actor
from .backends.base import Site
from .errors import NotFound, NotPermitted
from .records import Session
from .settings import Settings
from .settings import load as load_settings
from .store import Store

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing and collections cost milliseconds at start-up
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any

    from .hosts import Host
    from .importers import Source
    from .schrootconf import Plan

    Progress = Callable[[float | None, str], None]


def _no_progress(fraction: float | None, message: str) -> None:
    return None


class Engine:
    """Operations on one state root, on behalf of one actor.

    *on_wait* is told (once per wait) when an operation waits for a lock;
    *progress* receives (fraction or None, message) during long operations.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        root: str | None = None,
        actor: Actor | None = None,
        on_wait: Callable[[str], None] | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.settings = settings if settings is not None else load_settings(root)
        self.store = Store(self.settings)
        self.actor = actor if actor is not None else Actor.current()
        self.on_wait = on_wait
        self.progress: Progress = progress or _no_progress
        self._ready = False

    # --- plumbing ---------------------------------------------------------------

    def require_root(self, what: str) -> None:
        if os.geteuid() != 0:
            raise NotPermitted(f"{what} needs root (run roost with sudo)")

    def ready(self) -> None:
        """Create the state and runtime roots on first use (needs root)."""
        if self._ready:
            return
        self.store.ensure()
        mounts.make_private_mount_dir(self.store.mnt_dir)
        self._ready = True

    def lock(self, name: str, operation: str, *, exclusive: bool = True, wait: bool = True) -> locks.Lock:
        lock = locks.Lock(self.store.lock_dir, name, self.actor, timeout=self.settings.lock_timeout)
        return lock.acquire(operation, exclusive=exclusive, wait=wait, on_wait=self.on_wait)

    def image_lock(self, image: str, operation: str, *, exclusive: bool = True) -> locks.Lock:
        return self.lock(self.store.image_lock_name(image), operation, exclusive=exclusive)

    def session_lock(self, session: str, operation: str, *, wait: bool = True) -> locks.Lock:
        return self.lock(self.store.session_lock_name(session), operation, wait=wait)

    def site(self) -> Site:
        """What backends need to know about this host's roots and pools."""
        return Site(
            state_root=self.store.root,
            run_root=self.store.run,
            zfs_dataset=self.settings.zfs_dataset or None,
            btrfs_pool=self.settings.btrfs_pool or None,
        )

    def journal(self, operation: str, **fields: Any) -> None:
        try:
            journal.append(self.store.journal_path, self.actor, operation, log_to=self.settings.syslog, **fields)
        except OSError:
            pass  # the journal is history, not state: never fail an operation over it

    # --- images -----------------------------------------------------------------

    def create_image(
        self,
        name: str,
        source: Source,
        *,
        backend: str | None = None,
        profile: str = "default",
        description: str = "",
        settings: Mapping[str, Any] | None = None,
    ) -> images.ImageInfo:
        return images.create(
            self, name, source, backend=backend, profile=profile, description=description, settings=settings
        )

    def plan_schroot_import(
        self,
        files: Sequence[str] | None = None,
        *,
        schroot_dir: str | None = None,
        chroots: Sequence[str] | None = None,
    ) -> tuple[list[Plan], list[str]]:
        """How schroot's chroots (in *files*, or all of *schroot_dir*) would become images; changes nothing.

        Returns the plans and the chroot.d files schroot itself would skip.
        """
        from . import schrootconf

        directory = schroot_dir or schrootconf.SCHROOT_DIR
        skipped: list[str] = []
        if files:
            entries = [e for f in files for e in schrootconf.read_file(f)]
        else:
            entries, skipped = schrootconf.read_all(directory)
        if chroots:
            known = {e.name for e in entries}
            for name in chroots:
                if name not in known:
                    raise NotFound(f"no schroot chroot {name!r} in {', '.join(files or [directory])}")
            entries = [e for e in entries if e.name in chroots]
        return [schrootconf.plan(e, self, schroot_dir=directory) for e in entries], skipped

    def import_schroot(self, plans: list[Plan], *, backend: str | None = None) -> list[Plan]:
        """Create an image for every plan that has no error (see :meth:`plan_schroot_import`)."""
        from . import schrootconf

        self.require_root("image import-schroot")
        return schrootconf.run(self, plans, backend=backend)

    def resolve_image(self, name: str) -> str:
        """The image called *name*, or the image that has *name* as an alias."""
        return images.resolve(self, name)

    def convert_image(self, name: str, backend: str, *, new_name: str | None = None) -> images.ImageInfo:
        return images.convert(self, name, backend, new_name=new_name)

    def list_images(self) -> list[images.ImageInfo]:
        return images.list_images(self)

    def image_info(self, name: str) -> images.ImageInfo:
        return images.info(self, name)

    def image_history(self, name: str) -> list[images.GenerationInfo]:
        return images.history(self, name)

    def rollback(self, name: str, generation: int | None = None) -> int:
        return images.rollback(self, name, generation)

    def remove_image(self, name: str, *, force: bool = False) -> None:
        images.remove(self, name, force=force)

    def gc(self, name: str | None = None, *, keep: int | None = None, dry_run: bool = False) -> list[images.GcResult]:
        return images.gc(self, name, keep=keep, dry_run=dry_run)

    def export_image(self, name: str, path: str, *, generation: int | None = None, force: bool = False) -> Any:
        """Write a generation (default: current) as a tarball that ``--from-tar`` restores exactly.

        Returns a :class:`core.exports.ExportResult`.
        """
        from . import exports

        return exports.export(self, name, path, generation=generation, force=force)

    # --- sessions ---------------------------------------------------------------

    def begin(
        self,
        image: str,
        *,
        name: str | None = None,
        maintenance: bool = False,
        auto: bool = False,
        alias: str | None = None,
    ) -> Session:
        return sessions.begin(self, image, name=name, maintenance=maintenance, auto=auto, alias=alias)

    def mark_failed(self, session: str, reason: str) -> bool:
        return sessions.mark_failed(self, session, reason)

    def end(self, session: str, *, force: bool = False) -> None:
        sessions.end(self, session, force=force)

    def promote(self, session: str, message: str = "") -> int:
        return sessions.promote(self, session, message)

    def list_sessions(self, image: str | None = None) -> list[sessions.SessionInfo]:
        return sessions.list_sessions(self, image)

    def session_info(self, session: str, *, details: bool = True) -> sessions.SessionInfo:
        return sessions.info(self, session, details=details)

    def launch(
        self,
        session: str,
        argv: Sequence[str] | None,
        *,
        user: str | None = None,
        directory: str | None = None,
        preserve_env: bool = False,
        environ: Mapping[str, str] | None = None,
        caller_cwd: str | None = None,
    ) -> Any:
        return sessions.launch(
            self,
            session,
            argv,
            user=user,
            directory=directory,
            preserve_env=preserve_env,
            environ=environ,
            caller_cwd=caller_cwd,
        )

    def run_in(self, session: str, argv: Sequence[str], **kwargs: Any) -> int:
        return sessions.run_in(self, session, argv, **kwargs)

    def run_auto(self, image: str, argv: Sequence[str], **kwargs: Any) -> int:
        return sessions.run_auto(self, image, argv, **kwargs)

    def recover(self, session: str | None = None) -> list[str]:
        from .recover import recover

        return recover(self, session)

    def check(self) -> list[str]:
        """Every mismatch between the state root, the records and the mount table."""
        from . import doctor

        return doctor.check(self)

    # --- batch plans ------------------------------------------------------------

    def run_plan(self, plan: Any, *, on_result: Callable[[Any], None] | None = None, output: int = 1) -> Any:
        """Run a plan parsed by :func:`core.batch.parse` (docs/batch.md); returns a :class:`core.batch.Report`.

        *on_result* gets each :class:`core.batch.StepResult` as it is known; the
        commands of ``run`` steps write their output to the descriptor *output*.
        """
        from . import batch

        return batch.run(self, plan, on_result=on_result, output=output)

    def backends(self) -> list[tuple[str, str | None, str]]:
        """(backend, why it cannot be used here or None, what it is), and which new images get."""
        from . import backends

        return backends.report(self.site())

    def default_backend(self) -> str:
        """The backend ``image create`` uses when none is given (``default-backend``, or the best here)."""
        from . import backends

        name = self.settings.default_backend
        return backends.best(self.site()).name if name == backends.AUTO else name

    # --- other hosts (core/replicate.py, core/fleet.py) -------------------------

    def image_inventory(self, name: str) -> dict[str, Any]:
        """What this host has of image *name* and what it can receive, for a sender's plan."""
        from . import replicate

        return replicate.inventory(self, name)

    def send_image(self, name: str, theirs: dict[str, Any], out: int, *, backend: str | None = None) -> dict[str, Any]:
        """Write to *out* the stream bringing the receiver described by *theirs* to this host's *name*."""
        from . import replicate

        return replicate.send(self, name, theirs, out, backend=backend)

    def receive_image(self, name: str, inp: int) -> dict[str, Any]:
        """Read an image stream from *inp* and commit it (compare-and-swap, like promote)."""
        from . import replicate

        return replicate.receive(self, name, inp)

    def push_image(self, name: str, host: Host, *, backend: str | None = None) -> dict[str, Any]:
        from . import replicate

        return replicate.push(self, name, host, backend=backend)

    def pull_image(self, host: Host, name: str, *, backend: str | None = None) -> dict[str, Any]:
        from . import replicate

        return replicate.pull(self, host, name, backend=backend)

    def summary(self) -> dict[str, Any]:
        """This host's images, sessions, locks and load (what another host's console polls)."""
        from . import fleet

        return fleet.summary(self)

    # --- locks ------------------------------------------------------------------

    def locks(self) -> list[locks.LockState]:
        return images.lock_view(self)
