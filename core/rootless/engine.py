"""The engine's facade on an ordinary user's own state: :class:`RootlessEngine`.

Front doors get it from :func:`core.engine.open_engine` in user mode and call
the same methods as on :class:`core.engine.Engine`. Every method still asks
the policy first (the user is the administrator of their own state:
``Actor.own_state``); what differs is underneath:

- sessions (begin, run, enter, end, promote, recover, listings) are
  :mod:`core.rootless.lifecycle`'s: a holder process per session, nothing in
  the host's mount table;
- images are created, exported and removed inside a user namespace mapped
  through the user's subordinate ids (:mod:`core.rootless.content`); their
  listings, history, rollback and gc are the shared engine's (plain files the
  user owns; gc removes inside the namespace);
- only the overlay backend exists; operations that need the host's root
  (convert, diffs, network switches, send and receive) are refused with one
  line; publish writes the user's own tarball (:mod:`core.rootless.publishing`).
"""

from __future__ import annotations

import os

from .. import policy
from ..actor import Actor
from ..engine import Engine
from ..errors import BadInput, NotPermitted
from ..records import Session
from ..settings import Settings
from . import lifecycle
from .context import RootlessContext

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any, NoReturn

    from ..diff import Diff
    from ..exports import ExportResult
    from ..hosts import Host
    from ..importers import Source
    from ..policy import Policy
    from ..process import Launch
    from ..publish import PublishResult
    from ..views import ImageInfo, SessionInfo
    from .ids import IdMap

    Progress = Callable[[float | None, str], None]

BACKEND = lifecycle.BACKEND


def _not_here(what: str) -> NotPermitted:
    return NotPermitted(f"{what} is not available in rootless mode (run it through sudo, with --system)")


class RootlessEngine(Engine):
    """Operations on the calling user's own state root, with no privilege."""

    ctx: RootlessContext

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        root: str | None = None,
        actor: Actor | None = None,
        policy: Policy | None = None,
        on_wait: Callable[[str], None] | None = None,
        progress: Progress | None = None,
        idmap: IdMap | None = None,
    ) -> None:
        if settings is None:
            from .config import load

            settings = load(root)
        if actor is None:
            actor = Actor.current()
            actor.own_state = True
        self.ctx = RootlessContext(settings, actor, policy=policy, on_wait=on_wait, progress=progress, idmap=idmap)

    # --- images -----------------------------------------------------------------

    def create_image(
        self,
        name: str,
        source: Source,
        *,
        backend: str | None = None,
        profile: str = "default",
        description: str = "",
        settings: Mapping[str, object] | None = None,
    ) -> ImageInfo:
        self.ctx.authorize(policy.IMAGE_CREATE)
        if backend not in (None, BACKEND):
            raise BadInput(f"rootless images use the {BACKEND} backend only, not {backend}")
        if settings:
            raise BadInput("image settings are not available in rootless mode (edit image.yaml afterwards)")
        lifecycle.create_image(self.ctx, name, source, profile=profile, description=description)
        return self.image_info(name)

    def convert_image(self, name: str, backend: str, *, new_name: str | None = None) -> ImageInfo:
        raise _not_here("image convert")

    def remove_image(self, name: str, *, force: bool = False) -> None:
        from .. import images

        images.authorize(self.ctx, policy.IMAGE_REMOVE, name)
        if force:
            for s in self.list_sessions(name):
                self.end(s.session.id)
        lifecycle.remove_image(self.ctx, name)

    def export_image(self, name: str, path: str, *, generation: int | None = None, force: bool = False) -> ExportResult:
        from .. import images
        from ..exports import ExportResult, compression_of

        images.authorize(self.ctx, policy.IMAGE_EXPORT, name)
        _, _, label = compression_of(path)
        number, size = lifecycle.export_image(self.ctx, name, path, generation=generation, force=force)
        return ExportResult(name, number, os.path.abspath(path), label, size, size if label == "none" else None)

    def publish_sbuild_tarball(
        self,
        name: str,
        directory: str | None = None,
        *,
        tarball_name: str | None = None,
        compression: str = "zstd",
        generation: int | None = None,
    ) -> PublishResult:
        from .. import images
        from .publishing import publish

        images.authorize(self.ctx, policy.IMAGE_EXPORT, name)
        return publish(self.ctx, name, directory, name=tarball_name, compression=compression, generation=generation)

    # --- sessions ---------------------------------------------------------------

    def begin(
        self,
        image: str,
        *,
        name: str | None = None,
        maintenance: bool = False,
        auto: bool = False,
        alias: str | None = None,
        network: str | None = None,
        limits: Mapping[str, int | float | str] | None = None,
        command_prefix: Sequence[str] | None = None,
    ) -> Session:
        self._image(policy.SESSION_MAINTAIN if maintenance else policy.SESSION_BEGIN, image)
        _refuse_isolation(network, limits, command_prefix)
        if alias is not None:
            from .. import images as image_ops

            if image_ops.resolve(self.ctx, alias) != image:
                raise BadInput(f"{alias} is not a name of image {image}")
        return lifecycle.begin(self.ctx, image, name=name, maintenance=maintenance, auto=auto, alias=alias)

    def set_network(self, session: str, network: str) -> tuple[str, int]:
        raise _not_here("session network")

    def session_usage(self, found: Sequence[Session]) -> dict[str, dict[str, int | None]]:
        self.ctx.authorize(policy.HOST_VIEW)
        return {}  # rootless sessions have no cgroup of roost's

    def _image(self, action: str, name: str) -> None:
        """Ask the policy about image *name* without core.images (begin and run are hot paths)."""
        from ..names import check_object_name

        check_object_name(name, "image name")
        config = lifecycle.image_config(self.ctx, name)
        self.ctx.authorize(action, policy.ImageTarget(name, config.access_lists()))

    def _session(self, sid: str, action: str) -> Session:
        from ..session import session_target

        session = lifecycle.read(self.ctx, sid)
        self.ctx.authorize(action, session_target(session))
        return session

    def mark_failed(self, session: str, reason: str) -> bool:
        self._session(session, policy.SESSION_MARK)
        return lifecycle.mark_failed(self.ctx, session, reason)

    def end(self, session: str, *, force: bool = False) -> None:
        self._session(session, policy.SESSION_END)
        lifecycle.end(self.ctx, session)

    def promote(self, session: str, message: str = "") -> int:
        s = self._session(session, policy.SESSION_VIEW)
        self._image(policy.SESSION_PROMOTE, s.image)
        return lifecycle.promote(self.ctx, session, message)

    def list_sessions(self, image: str | None = None) -> list[SessionInfo]:
        from ..names import check_object_name
        from ..views import SessionInfo, Viewer

        if image is not None:
            check_object_name(image, "image name")
        viewer = Viewer(self.ctx.policy, self.ctx.actor)
        return [
            SessionInfo(s, state)
            for s, state in lifecycle.list_sessions(self.ctx)
            if (image is None or s.image == image) and viewer.sees_session(s)
        ]

    def session_info(self, session: str, *, details: bool = True) -> SessionInfo:
        from ..views import SessionInfo

        s = self._session(session, policy.SESSION_VIEW)
        state = lifecycle.state_of(s)
        if not details:
            return SessionInfo(s, state)
        return SessionInfo(s, state, processes=len(lifecycle.processes(s)))

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
    ) -> Launch:
        self._session(session, policy.SESSION_RUN if argv is not None else policy.SESSION_ENTER)
        _, spec = lifecycle.launch(
            self.ctx,
            session,
            argv,
            user=user,
            directory=directory,
            preserve_env=preserve_env,
            environ=environ,
            caller_cwd=os.getcwd() if caller_cwd is None else caller_cwd,
        )
        return spec

    def start(
        self,
        session: str,
        launch: Launch,
        *,
        stdin: int = 0,
        stdout: int = 1,
        stderr: int = 2,
        foreground: int | None = None,
    ) -> int:
        from . import holder

        ref, lock = self._hold_for_run(session)
        # Released before the fork: the child would keep the lock for as long as the command runs (it
        # waits for it, joined to the holder). An end meanwhile kills the holder; the child then fails
        # to join and exits as the command would have, with the reason on stderr.
        lock.release()
        return holder.spawn_command(ref, launch, stdin=stdin, stdout=stdout, stderr=stderr, foreground=foreground)

    def exec(self, session: str, launch: Launch) -> NoReturn:
        from . import holder

        ref, lock = self._hold_for_run(session)
        holder.exec_joined(ref, launch, lock.release)  # the lock is released once the command has exec'd

    def _hold_for_run(self, sid: str) -> tuple[Any, Any]:
        """The session's live holder and its lock held shared (end waits until the command runs)."""
        from ..errors import Conflict
        from . import holder

        s = self._session(sid, policy.SESSION_RUN)
        lock = self.ctx.lock(self.ctx.store.session_lock_name(sid), "run", exclusive=False)
        ref = holder.of(lifecycle.read(self.ctx, sid))
        if s.state != "active" or ref is None or not holder.alive(ref):
            lock.release()
            raise Conflict(f"session {sid} ended or lost its holder meanwhile")
        return ref, lock

    def run_in(
        self,
        session: str,
        argv: Sequence[str],
        *,
        user: str | None = None,
        directory: str | None = None,
        preserve_env: bool = False,
        environ: Mapping[str, str] | None = None,
        caller_cwd: str | None = None,
        stdin: int = 0,
        stdout: int = 1,
        stderr: int = 2,
        forward_signals: bool = True,
        extra_env: Mapping[str, str] | None = None,
    ) -> int:
        self._session(session, policy.SESSION_RUN)
        env = dict(os.environ if environ is None else environ)
        env.update(extra_env or {})
        return lifecycle.run_in(
            self.ctx,
            session,
            argv,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            forward_signals=forward_signals,
            user=user,
            directory=directory,
            preserve_env=preserve_env,
            environ=env,
            caller_cwd=os.getcwd() if caller_cwd is None else caller_cwd,
        )

    def run_auto(
        self,
        image: str,
        argv: Sequence[str],
        *,
        user: str | None = None,
        directory: str | None = None,
        preserve_env: bool = False,
        environ: Mapping[str, str] | None = None,
        caller_cwd: str | None = None,
        forward_signals: bool = True,
        network: str | None = None,
        limits: Mapping[str, int | float | str] | None = None,
    ) -> int:
        self._image(policy.SESSION_BEGIN, image)
        _refuse_isolation(network, limits, None)
        return lifecycle.run_auto(
            self.ctx,
            image,
            argv,
            user=user,
            directory=directory,
            preserve_env=preserve_env,
            environ=environ,
            caller_cwd=os.getcwd() if caller_cwd is None else caller_cwd,
        )

    def recover(self, session: str | None = None) -> list[str]:
        if session is None:
            self.ctx.authorize(policy.HOST_ADMIN)
        else:
            self._session(session, policy.SESSION_RECOVER)
        return lifecycle.recover(self.ctx, session)

    def check(self) -> list[str]:
        """What the user lacks for rootless use (with its fix) first, then what is wrong in their state."""
        import pwd

        from . import doctor, ids

        self.ctx.authorize(policy.HOST_ADMIN)
        entry = pwd.getpwuid(os.getuid())
        problems = doctor.check(ids.current, entry.pw_name, entry.pw_uid, entry.pw_gid, self.store.root)
        if problems:
            return problems
        return lifecycle.state_problems(self.ctx)

    # --- the host ---------------------------------------------------------------

    def backends(self) -> list[tuple[str, str | None, str]]:
        from .. import backends as registry

        self.ctx.authorize(policy.HOST_VIEW)
        out = []
        for name, why, what in registry.report(self.ctx.site()):
            if name != BACKEND:
                why = "not in rootless mode"
            out.append((name, why, what))
        return out

    def default_backend(self) -> str:
        self.ctx.authorize(policy.HOST_VIEW)
        return BACKEND

    # --- what needs the host's root ---------------------------------------------

    def session_diff(self, session: str) -> Diff:
        raise _not_here("session diff")

    def image_diff(self, name: str, old: int | None = None, new: int | None = None) -> Diff:
        raise _not_here("image diff")

    def image_inventory(self, name: str) -> dict[str, Any]:
        raise _not_here("image send")

    def send_image(
        self,
        name: str,
        theirs: dict[str, Any] | Callable[[], dict[str, Any]],
        out: int,
        *,
        backend: str | None = None,
    ) -> dict[str, Any]:
        raise _not_here("image send")

    def receive_image(self, name: str, inp: int) -> dict[str, Any]:
        raise _not_here("image receive")

    def push_image(self, name: str, host: Host, *, backend: str | None = None) -> dict[str, Any]:
        raise _not_here("image push")

    def pull_image(self, host: Host, name: str, *, backend: str | None = None) -> dict[str, Any]:
        raise _not_here("image pull")


def _refuse_isolation(
    network: str | None,
    limits: Mapping[str, int | float | str] | None,
    command_prefix: Sequence[str] | None,
) -> None:
    """Rootless sessions keep the host's network and have no cgroup of roost's: refuse asking otherwise."""
    for given, what in ((network, "--network"), (limits, "--limit"), (command_prefix, "a command prefix")):
        if given:
            raise BadInput(f"{what} is not available for rootless sessions")
