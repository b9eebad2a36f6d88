"""The engine's facade: the one way in for every front door (command line, console, plans, schroot door).

Each method is a typed call into the module that does the work, with the
:class:`~core.context.Context` (settings, store, actor, policy, locks,
journal, progress) as its first argument. Locking, validation, the policy's
decision and the journal happen there; front doors only parse and print.
"""

from __future__ import annotations

from . import policy
from . import session as session_ops
from .actor import Actor
from .context import Context
from .policy import Policy
from .records import Session
from .settings import Settings
from .settings import load as load_settings
from .store import Store

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing and collections cost milliseconds at start-up
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from typing import Any, NoReturn

    from .diff import Diff
    from .exports import ExportResult
    from .hosts import Host
    from .imageconf import ImageConfig
    from .images import GcResult
    from .importers import Source
    from .locks import LockState
    from .process import Launch
    from .profiles import Profile
    from .publish import PublishResult
    from .views import GenerationInfo, ImageInfo, SessionInfo

    Progress = Callable[[float | None, str], None]


class _OnFirstUse:
    """Stands for a module of this one's until first used, then imports it and gives way to it.

    ``session end`` and ``run`` need no image operations, and each module is a
    fraction of a millisecond on every command (BENCHMARKS.md, "Start-up").
    """

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> object:
        module = __import__(f"{__package__}.{self._name}", fromlist=["_"])
        globals()[self._name] = module
        return getattr(module, attr)


if TYPE_CHECKING:
    from . import images
else:
    images = _OnFirstUse("images")


class Engine:
    """Operations on one state root, on behalf of one actor."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        root: str | None = None,
        actor: Actor | None = None,
        policy: Policy | None = None,
        on_wait: Callable[[str], None] | None = None,
        progress: Progress | None = None,
    ) -> None:
        settings = settings if settings is not None else load_settings(root)
        actor = actor if actor is not None else Actor.current()
        self.ctx = Context(settings, actor, policy=policy, on_wait=on_wait, progress=progress)

    @property
    def settings(self) -> Settings:
        return self.ctx.settings

    @property
    def actor(self) -> Actor:
        return self.ctx.actor

    @property
    def store(self) -> Store:
        return self.ctx.store

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
        return images.create(
            self.ctx, name, source, backend=backend, profile=profile, description=description, settings=settings
        )

    def resolve_image(self, name: str) -> str:
        """The image called *name*, or the image that has *name* as an alias."""
        return images.resolve(self.ctx, name)

    def image_names(self) -> list[str]:
        """The names of the images the caller may see, sorted."""
        return images.visible_names(self.ctx)

    def image_exists(self, name: str) -> bool:
        """Whether image *name* exists (a real directory in the state root, not a planted symlink)."""
        return images.exists_for(self.ctx, name)

    def image_config(self, name: str) -> ImageConfig:
        """Image *name*'s image.yaml, parsed (for those who may see it); NotFound if there is no such image."""
        return images.authorize(self.ctx, policy.IMAGE_VIEW, name)

    def current_generation(self, name: str) -> int:
        """The number of image *name*'s current generation (for those who may see it)."""
        return images.current_generation(self.ctx, name)

    def access_level(self, lists: Mapping[str, Iterable[str]]) -> str:
        """The caller's level (admin, root, user, none) on what these access lists guard (core/policy.py)."""
        self.ctx.authorize(policy.HOST_VIEW)
        return self.ctx.policy.level(self.ctx.actor, lists)

    def profile(self, name: str) -> Profile:
        """Profile *name*: the site's (``profiles-dir``), else the built-in one; NotFound if neither exists."""
        from .profiles import load_profile

        self.ctx.authorize(policy.HOST_VIEW)
        return load_profile(name, self.settings.profiles_dir)

    def convert_image(self, name: str, backend: str, *, new_name: str | None = None) -> ImageInfo:
        return images.convert(self.ctx, name, backend, new_name=new_name)

    def list_images(self) -> list[ImageInfo]:
        return images.list_images(self.ctx)

    def image_info(self, name: str) -> ImageInfo:
        return images.info(self.ctx, name)

    def image_history(self, name: str) -> list[GenerationInfo]:
        return images.history(self.ctx, name)

    def rollback(self, name: str, generation: int | None = None) -> int:
        return images.rollback(self.ctx, name, generation)

    def remove_image(self, name: str, *, force: bool = False) -> None:
        images.remove(self.ctx, name, force=force)

    def gc(self, name: str | None = None, *, keep: int | None = None, dry_run: bool = False) -> list[GcResult]:
        return images.gc(self.ctx, name, keep=keep, dry_run=dry_run)

    def export_image(self, name: str, path: str, *, generation: int | None = None, force: bool = False) -> ExportResult:
        """Write a generation (default: current) as a tarball that ``--from-tar`` restores exactly."""
        from . import exports

        return exports.export(self.ctx, name, path, generation=generation, force=force)

    def publish_sbuild_tarball(
        self,
        name: str,
        directory: str | None = None,
        *,
        tarball_name: str | None = None,
        compression: str = "zstd",
        generation: int | None = None,
    ) -> PublishResult:
        """Write a generation (default: current) as the tarball sbuild's unshare mode reads (core/publish.py).

        Into *directory*, by default the caller's ``~/.cache/sbuild``, with the caller's rights.
        """
        from . import publish

        return publish.publish(
            self.ctx, name, directory, name=tarball_name, compression=compression, generation=generation
        )

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
        """Begin a session of *image*; *network*, *limits* and *command_prefix* replace the image's for it."""
        return session_ops.begin(
            self.ctx,
            image,
            name=name,
            maintenance=maintenance,
            auto=auto,
            alias=alias,
            network=network,
            limits=limits,
            command_prefix=command_prefix,
        )

    def set_network(self, session: str, network: str) -> tuple[str, int]:
        """Switch a live session's network (host, none, loopback) for the commands it runs next.

        Returns (the network it had, how many of its processes keep that one until they exit).
        """
        from . import netswitch

        return netswitch.set_network(self.ctx, session, network)

    def session_usage(self, found: Sequence[Session]) -> dict[str, dict[str, int | None]]:
        """Live memory and CPU figures of the sessions in *found* that have a cgroup, by id (for the console)."""
        from . import isolation_upkeep

        self.ctx.authorize(policy.HOST_VIEW)
        visible = [s for s in found if self.ctx.permits(policy.SESSION_VIEW, session_ops.session_target(s))]
        return isolation_upkeep.usages(visible)

    def mark_failed(self, session: str, reason: str) -> bool:
        return session_ops.mark_failed(self.ctx, session, reason)

    def end(self, session: str, *, force: bool = False) -> None:
        session_ops.end(self.ctx, session, force=force)

    def promote(self, session: str, message: str = "") -> int:
        return session_ops.promote(self.ctx, session, message)

    def list_sessions(self, image: str | None = None) -> list[SessionInfo]:
        return session_ops.list_sessions(self.ctx, image)

    def session_info(self, session: str, *, details: bool = True) -> SessionInfo:
        return session_ops.info(self.ctx, session, details=details)

    def session_exists(self, session: str) -> bool:
        """Whether a session of that name exists (its name is taken), whoever's it is."""
        self.ctx.authorize(policy.HOST_VIEW)
        return session_ops.exists(self.ctx, session)

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
        return session_ops.launch(
            self.ctx,
            session,
            argv,
            user=user,
            directory=directory,
            preserve_env=preserve_env,
            environ=environ,
            caller_cwd=caller_cwd,
        )

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
        """Start *launch* (from :meth:`launch`) in *session*: the one run protocol (see core/session/running.py).

        Returns the child's pid once it has exec'd; the caller waits for it.
        """
        return session_ops.start(
            self.ctx, session, launch, stdin=stdin, stdout=stdout, stderr=stderr, foreground=foreground
        )

    def exec(self, session: str, launch: Launch) -> NoReturn:
        """Replace this process with *launch* in *session* (the run protocol without a fork)."""
        session_ops.exec_in(self.ctx, session, launch)
        raise AssertionError("exec returned")

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
        return session_ops.run_in(
            self.ctx,
            session,
            argv,
            user=user,
            directory=directory,
            preserve_env=preserve_env,
            environ=environ,
            caller_cwd=caller_cwd,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            forward_signals=forward_signals,
            extra_env=extra_env,
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
        return session_ops.run_auto(
            self.ctx,
            image,
            argv,
            user=user,
            directory=directory,
            preserve_env=preserve_env,
            environ=environ,
            caller_cwd=caller_cwd,
            forward_signals=forward_signals,
            network=network,
            limits=limits,
        )

    def recover(self, session: str | None = None) -> list[str]:
        from .recover import recover

        return recover(self.ctx, session)

    def check(self) -> list[str]:
        """Every mismatch between the state root, the records and the mount table."""
        from . import doctor

        return doctor.check(self.ctx)

    # --- the host ---------------------------------------------------------------

    def journal(self, operation: str, **fields: object) -> None:
        """Add a line to the journal (for clients above the engine: plans, schroot import)."""
        self.ctx.journal(operation, **fields)

    def backends(self) -> list[tuple[str, str | None, str]]:
        """(backend, why it cannot be used here or None, what it is)."""
        from . import doctor

        return doctor.backends(self.ctx)

    def default_backend(self) -> str:
        """The backend ``image create`` uses when none is given (``default-backend``, or the best here)."""
        return images.default_backend(self.ctx)

    def locks(self) -> list[LockState]:
        return images.lock_view(self.ctx)

    # --- diffs (core/diff) --------------------------------------------------------

    def session_diff(self, session: str) -> Diff:
        """What *session* changed against its generation: enter the returned :class:`core.diff.Diff` to read it."""
        from .diff import session_diff

        return session_diff(self.ctx, session)

    def image_diff(self, name: str, old: int | None = None, new: int | None = None) -> Diff:
        """From generation *old* (default: *new*'s parent) to *new* (default: current); enter it to read it."""
        from .diff import image_diff

        return image_diff(self.ctx, name, old, new)

    # --- other hosts (core/replicate.py, core/fleet.py) -------------------------

    def image_inventory(self, name: str) -> dict[str, Any]:
        """What this host has of image *name* and what it can receive, for a sender's plan."""
        from . import replicate

        return replicate.inventory(self.ctx, name)

    def send_image(
        self,
        name: str,
        theirs: dict[str, Any] | Callable[[], dict[str, Any]],
        out: int,
        *,
        backend: str | None = None,
    ) -> dict[str, Any]:
        """Write to *out* the stream bringing the receiver described by *theirs* (or what it returns) to *name*."""
        from . import replicate

        return replicate.send(self.ctx, name, theirs, out, backend=backend)

    def receive_image(self, name: str, inp: int) -> dict[str, Any]:
        """Read an image stream from *inp* and commit it (compare-and-swap, like promote)."""
        from . import replicate

        return replicate.receive(self.ctx, name, inp)

    def push_image(self, name: str, host: Host, *, backend: str | None = None) -> dict[str, Any]:
        """Copy the generations *host* lacks of image *name* to it, over ssh."""
        from . import replicate

        return replicate.push(self.ctx, name, host, backend=backend)

    def pull_image(self, host: Host, name: str, *, backend: str | None = None) -> dict[str, Any]:
        """Copy the generations this host lacks of image *name* from *host*, over ssh."""
        from . import replicate

        return replicate.pull(self.ctx, host, name, backend=backend)

    def summary(self) -> dict[str, Any]:
        """This host's images, sessions, locks and load (what another host's console polls)."""
        from . import fleet

        return fleet.summary(self)


def open_engine(
    mode: str | None = None,
    *,
    root: str | None = None,
    on_wait: Callable[[str], None] | None = None,
    progress: Progress | None = None,
) -> Engine:
    """The engine of the mode asked for (``system``, ``user``) or, with None, of who runs roost.

    Root (directly or through sudo) gets the system's state; anyone else
    their own, rootless (core.rootless.engine). A mode that contradicts who
    runs roost is refused with one line (core.rootless.config.mode).
    """
    import os

    if mode is None and os.geteuid() == 0:
        return Engine(root=root, on_wait=on_wait, progress=progress)
    from .rootless import config

    if config.mode(asked=mode) == config.SYSTEM:
        return Engine(root=root, on_wait=on_wait, progress=progress)
    from .rootless.engine import RootlessEngine

    return RootlessEngine(root=root, on_wait=on_wait, progress=progress)
