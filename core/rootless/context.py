"""The engine's context for an ordinary user's own state (rootless mode).

A :class:`RootlessContext` is a :class:`core.context.Context` on the user's
state root (:func:`core.rootless.config.load`) with what the rootless steps
need besides: the user's id layout (:attr:`idmap`, read on first use), and
a :meth:`ready` that checks the roots are the user's own and the layout is
the one the state root was made with, and mounts nothing.
"""

from __future__ import annotations

import os

from ..context import Context
from ..errors import NotPermitted

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .ids import IdMap


#: Operations of the shared engine that need no privilege on a state the user owns, so
#: :meth:`RootlessContext.require_privileged` lets them through unchanged.
UNPRIVILEGED = frozenset({"image rollback", "image gc"})


def check_own_dir(path: str, what: str) -> None:
    """Refuse *path* unless it is missing or a real directory of the user's own (never another user's, nor root's)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    import stat

    if not stat.S_ISDIR(st.st_mode):
        raise NotPermitted(f"refusing to use {what} {path}: it is not a directory")
    if st.st_uid != os.geteuid():
        raise NotPermitted(f"refusing to use {what} {path}: it belongs to uid {st.st_uid}, not to you")


class RootlessContext(Context):
    """One user's own state root: the user is its administrator (``Actor.own_state``)."""

    __slots__ = ("_idmap",)

    rootless = True

    def __init__(self, *args: object, idmap: IdMap | None = None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._idmap = idmap
        for path, what in self._roots():
            check_own_dir(path, what)  # before anything is read there, not only before writing

    def _roots(self) -> tuple[tuple[str, str], ...]:
        return ((self.store.root, "state root"), (self.store.run, "runtime root"))

    @property
    def idmap(self) -> IdMap:
        if self._idmap is None:
            from .ids import current

            self._idmap = current()
        return self._idmap

    def require_privileged(self, what: str) -> None:
        if what not in UNPRIVILEGED:
            raise NotPermitted(f"{what} is not available in rootless mode (run it through sudo, with --system)")

    def ready(self) -> None:
        """Create the roots (the user's, 0700 where it matters), then check the id layout; mount nothing."""
        if self._ready:
            return
        if os.geteuid() == 0:
            raise NotPermitted("rootless roost is for ordinary users; root uses the system mode")
        from .lifecycle import check_idmap

        self.store.ensure()  # every directory from / down: root's or the user's, writable by nobody else
        for path, what in self._roots():
            check_own_dir(path, what)
        check_idmap(self.store.root, self.idmap)
        self._ready = True
