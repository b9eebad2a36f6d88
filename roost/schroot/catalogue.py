"""What ``-c`` names: ``chroot:``, ``source:`` and ``session:`` names, and every one the caller may see.

:func:`resolve` looks one name up; :class:`Catalogue` reads every image and
session the caller may use once per command (for ``-l``, ``-i`` and the
``--all`` options). Both ask the engine only through its public methods.
"""

from __future__ import annotations

from .options import split_name

TYPE_CHECKING = False
if TYPE_CHECKING:
    from core.engine import Engine
    from core.imageconf import ImageConfig
    from core.records import Session

    from .options import Options

NAMESPACES = ("chroot", "source", "session")


class Target:
    """What one ``-c`` names: an image (``chroot``/``source``) or a session."""

    __slots__ = ("given", "image", "name", "namespace", "session")

    def __init__(
        self, namespace: str, given: str, name: str, *, image: str | None = None, session: Session | None = None
    ) -> None:
        self.namespace = namespace
        self.given = given  # as typed, namespace included
        self.name = name  # without its namespace
        self.image = image
        self.session = session


def not_found(given: str) -> Exception:
    from core.errors import NotFound

    return NotFound(f"{given}: chroot not found")


def resolve(eng: Engine, given: str, default: str = "chroot") -> Target:
    """Look *given* up in its namespace (or *default*), as schroot does."""
    from core.errors import NotFound
    from core.names import is_valid_name

    namespace, name = split_name(given, default)
    if namespace == "session":
        from .sessionnames import session_id

        name = session_id(name)  # a long name a client generated (piuparts) maps to its roost id
    if namespace not in NAMESPACES or not is_valid_name(name):
        raise not_found(given)
    if namespace == "session":
        try:
            session = eng.session_info(name, details=False).session
        except NotFound:
            raise not_found(given) from None
        return Target("session", given, name, image=session.image, session=session)
    try:
        image = eng.resolve_image(name)
    except NotFound:
        from .isolation import resolve_sbuild_name

        derived = resolve_sbuild_name(eng, name)  # SUITE-ARCH-sbuild: the name sbuild --arch looks for
        if derived is not None:
            return Target(namespace, given, derived, image=derived)
        # schroot's compatibility names: chroot:ALIAS-source is source:ALIAS (for aliases only:
        # schroot 1.6 has no chroot:NAME-source for a chroot's own name)
        if namespace == "chroot" and name.endswith("-source") and len(name) > 7:
            try:
                image = eng.resolve_image(name[:-7])
            except NotFound:
                derived = resolve_sbuild_name(eng, name[:-7])
                if derived is not None:
                    return Target("source", given, derived, image=derived)
            else:
                if image != name[:-7]:
                    return Target("source", given, name[:-7], image=image)
        raise not_found(given) from None
    return Target(namespace, given, name, image=image)


class Catalogue:
    """Every image and session the caller may see, read once per command."""

    def __init__(self, configs: dict[str, ImageConfig], sessions: list[Session], levels: dict[str, str]) -> None:
        self.configs = configs
        self.sessions = sessions
        self.levels = levels

    @classmethod
    def load(cls, eng: Engine, *, with_sessions: bool) -> Catalogue:
        configs: dict[str, ImageConfig] = {}
        levels: dict[str, str] = {}
        for info in eng.list_images():  # the policy lists what the caller may use
            if info.config is not None:
                configs[info.name] = info.config
                levels[info.name] = "root" if info.access in ("root", "admin") else info.access
        sessions = [i.session for i in eng.list_sessions()] if with_sessions else []
        return cls(configs, sessions, levels)

    def names(self, opts: Options) -> list[str]:
        """Fully qualified names, as ``schroot -l`` prints them (sorted)."""
        from .isolation import aliases as door_aliases

        out: set[str] = set()
        for image, config in self.configs.items():
            aliases = () if opts.exclude_aliases else door_aliases(image, config, self.configs)
            if opts.all_chroots:
                out.add(f"chroot:{image}")
                for alias in aliases:
                    out.add(f"chroot:{alias}")
                    if self.levels[image] == "root":
                        out.add(f"chroot:{alias}-source")
            if opts.all_sources and self.levels[image] == "root":
                out.add(f"source:{image}")
                out.update(f"source:{alias}" for alias in aliases)
        if opts.all_sessions:
            out.update(f"session:{s.id}" for s in self.sessions)
        return sorted(out)

    def targets(self, opts: Options) -> list[Target]:
        """One target per real chroot, source chroot and session (no aliases), sorted."""
        found: list[Target] = []
        for image in sorted(self.configs):
            if opts.all_chroots:
                found.append(Target("chroot", f"chroot:{image}", image, image=image))
            if opts.all_sources and self.levels[image] == "root":
                found.append(Target("source", f"source:{image}", image, image=image))
        if opts.all_sessions:
            found += [Target("session", f"session:{s.id}", s.id, image=s.image, session=s) for s in self.sessions]
        return sorted(found, key=lambda t: t.given)
