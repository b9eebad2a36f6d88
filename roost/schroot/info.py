"""``schroot -i``: schroot's text format, which sbuild scrapes."""

from __future__ import annotations

from .environment import ENVIRONMENT_FILTER

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from core.engine import Engine
    from core.imageconf import ImageConfig
    from core.records import Session

    from .catalogue import Target

Rows = list[tuple[str, str]]


def format_section(title: str, rows: Rows) -> str:
    """One block of ``schroot -i`` output: a title, then aligned ``Key  value`` lines.

    Keys starting with two spaces are sub-keys (indented under the one before).
    """
    width = max(len(k) for k, _ in rows) + 2
    lines = [f"  ─── {title} ───"]
    lines += [f"  {key.ljust(width)}{value}" for key, value in rows]
    return "\n".join(lines) + "\n"


def _words(values: Iterable[str]) -> str:
    return " ".join(values)


def _chroot_rows(name: str, config: ImageConfig, *, source: bool, generation: int | None) -> Rows:
    description = config.description or name
    rows: Rows = [
        ("Name", name),
        ("Description", f"{description} (source chroot)" if source else description),
        ("Type", f"roost-{config.backend}"),
        ("Users", _words(config.root_users if source else config.users)),
        ("Groups", _words(config.root_groups if source else config.groups)),
        ("Root Users", _words(config.root_users)),
        ("Root Groups", _words(config.root_groups)),
        ("Aliases", _words(config.aliases)),
        ("Preserve Environment", "false"),
        ("Environment Filter", ENVIRONMENT_FILTER),
        ("Configuration Profile", config.profile),
        ("Session Managed", "true"),
        ("Session Cloned", "false" if source else "true"),
        ("Session Purged", "false"),
        ("Personality", config.personality or "undefined"),
    ]
    if config.command_prefix:
        rows.append(("Command Prefix", ",".join(config.command_prefix)))
    rows.append(("Roost Backend", config.backend))
    if generation is not None:
        rows.append(("Roost Generation", str(generation)))
    return rows


def _session_rows(session: Session, description: str) -> Rows:
    access = session.access
    description = description or session.image
    if session.maintenance:
        description += " (source chroot)"
    rows: Rows = [
        ("Name", session.id),
        ("Description", f"{description} (session chroot)"),
        ("Type", f"roost-{session.backend}"),
        ("Users", session.owner),
        ("Groups", ""),
        ("Root Users", _words(access.get("root_users", ()))),
        ("Root Groups", _words(access.get("root_groups", ()))),
        ("Aliases", ""),
        ("Preserve Environment", "false"),
        ("Environment Filter", ENVIRONMENT_FILTER),
        ("Configuration Profile", session.profile),
        ("Session Managed", "false"),
        ("Session Cloned", "false"),
        # an ordinary session's changes are thrown away at its end: nothing for sbuild to clean
        ("Session Purged", "false" if session.maintenance else "true"),
        ("Mount Location", session.mountpoint),
        ("Path", session.mountpoint),
        ("Personality", session.personality or "undefined"),
        ("Original Chroot Name", session.image),
        ("Selected Chroot Name", session.alias or session.image),
        ("Session ID", session.id),
        ("Roost Generation", str(session.generation)),
        ("Roost Kind", session.kind),
    ]
    if session.failed:
        rows.append(("Roost Failed", session.failed))
    return rows


def info_text(eng: Engine, targets: Sequence[Target]) -> str:
    from core.errors import RoostError

    blocks = []
    for t in targets:
        if t.namespace == "session":
            assert t.session is not None
            try:
                description = eng.image_config(t.session.image).description
            except RoostError:
                description = ""
            blocks.append(format_section("Session", _session_rows(t.session, description)))
            continue
        assert t.image is not None
        config = eng.image_config(t.image)
        try:
            current: int | None = eng.current_generation(t.image)
        except RoostError:
            current = None
        source = t.namespace == "source"
        blocks.append(
            format_section(
                "Source" if source else "Chroot", _chroot_rows(t.image, config, source=source, generation=current)
            )
        )
    return "\n".join(blocks)
