"""What every engine operation works with: settings, store, actor, policy, locks, journal, progress.

Operations are plain functions in the engine's modules that take a
:class:`Context` first; :class:`core.engine.Engine` is the thin facade front
doors call. A context is cheap to make and holds no state beyond whether the
state and runtime roots were created.
"""

from __future__ import annotations

import os

from . import journal as journal_file
from . import locks
from .actor import Actor
from .backends.base import Site
from .errors import NotPermitted
from .policy import Policy
from .settings import Settings
from .store import Store

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing and collections cost milliseconds at start-up
    from collections.abc import Callable
    from typing import Any

    from .policy import Target

    Progress = Callable[[float | None, str], None]


def _no_progress(fraction: float | None, message: str) -> None:
    return None


class Context:
    """One state root, one actor, one policy.

    *on_wait* is told (once per wait) when an operation waits for a lock;
    *progress* receives (fraction or None, message) during long operations.
    """

    __slots__ = ("_ready", "actor", "on_wait", "policy", "progress", "settings", "store")

    #: True for an ordinary user's own state (core.rootless.context.RootlessContext).
    rootless = False

    def __init__(
        self,
        settings: Settings,
        actor: Actor,
        *,
        policy: Policy | None = None,
        on_wait: Callable[[str], None] | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.settings = settings
        self.store = Store(settings)
        self.actor = actor
        self.policy = policy if policy is not None else Policy(settings.admin_group)
        self.on_wait = on_wait
        self.progress: Progress = progress or _no_progress
        self._ready = False

    # --- the policy -----------------------------------------------------------------

    def authorize(self, action: str, target: Target | None = None, *, as_uid: int | None = None) -> None:
        """Ask the policy (core/policy.py); raises :class:`NotPermitted` with one line."""
        self.policy.check(self.actor, action, target, as_uid=as_uid)

    def permits(self, action: str, target: Target | None = None, *, as_uid: int | None = None) -> bool:
        return self.policy.permits(self.actor, action, target, as_uid=as_uid)

    def require_privileged(self, what: str) -> None:
        """Mounting, chrooting and changing ownership need root (rootless mode has its own ways)."""
        if os.geteuid() != 0:
            raise NotPermitted(f"{what} needs root (run roost with sudo)")

    # --- the roots ------------------------------------------------------------------

    def ready(self) -> None:
        """Create the state and runtime roots on first use, and check they may be trusted."""
        if self._ready:
            return
        from . import mounts

        self.store.ensure()
        mounts.make_private_mount_dir(self.store.mnt_dir)
        self._ready = True

    def site(self) -> Site:
        """What backends need to know about this host's roots and pools."""
        return Site(
            state_root=self.store.root,
            run_root=self.store.run,
            zfs_dataset=self.settings.zfs_dataset or None,
            btrfs_pool=self.settings.btrfs_pool or None,
        )

    # --- locks ----------------------------------------------------------------------

    def lock(
        self, name: str, operation: str, *, exclusive: bool = True, wait: bool = True, straggler_grace: float = 0.0
    ) -> locks.Lock:
        lock = locks.Lock(self.store.lock_dir, name, self.actor, timeout=self.settings.lock_timeout)
        return lock.acquire(
            operation, exclusive=exclusive, wait=wait, on_wait=self.on_wait, straggler_grace=straggler_grace
        )

    def image_lock(self, image: str, operation: str, *, exclusive: bool = True) -> locks.Lock:
        return self.lock(self.store.image_lock_name(image), operation, exclusive=exclusive)

    def session_lock(self, session: str, operation: str, *, wait: bool = True, exclusive: bool = True) -> locks.Lock:
        return self.lock(self.store.session_lock_name(session), operation, wait=wait, exclusive=exclusive)

    def tx_lock(self, tx: str, operation: str, *, wait: bool = True) -> locks.Lock:
        return self.lock(self.store.tx_lock_name(tx), operation, wait=wait)

    # --- the journal ----------------------------------------------------------------

    def journal(self, operation: str, **fields: Any) -> None:
        try:
            journal_file.append(self.store.journal_path, self.actor, operation, log_to=self.settings.syslog, **fields)
        except OSError:
            pass  # the journal is history, not state: never fail an operation over it
