"""The roost command line: ``roost [--headless] COMMAND …``.

Parses argv, calls the engine, prints. Errors the user can cause are one
line on stderr (``roost: …``) and the exit code of DESIGN.md: 0 ok, 1 the
command inside the session failed (``run`` passes its own code through),
2 bad input, 3 conflict, 4 not found, 5 system error.

``roost`` with no command opens the operator console; ``--headless`` never
draws and never prompts.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from . import __version__

PROG = "roost"


class UsageError(Exception):
    """argparse found bad arguments; reported as one line, exit 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def _add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")


def build_parser() -> Parser:
    parser = Parser(
        prog=PROG,
        description="Chroot session manager for Linux build hosts.",
        epilog="With no command, roost opens the operator console.",
    )
    parser.add_argument("--headless", action="store_true", help="never draw or prompt (for scripts)")
    parser.add_argument("--root", metavar="DIR", help="state root (default from roost.yaml or ROOST_ROOT)")
    parser.add_argument("--json", action="store_true", help="print JSON for listings and info")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress or waiting messages")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="group", metavar="COMMAND", parser_class=Parser)

    # image ...
    image = sub.add_parser("image", help="manage images and their generations")
    isub = image.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True, parser_class=Parser)
    p = isub.add_parser("create", help="create an image from a directory, a tarball or mmdebstrap")
    p.add_argument("name")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--from-dir", metavar="DIR")
    src.add_argument("--from-tar", metavar="FILE", help="a tarball (.tar, .gz, .xz, .zst)")
    src.add_argument("--mmdebstrap", metavar="SUITE", help="bootstrap SUITE with mmdebstrap")
    p.add_argument("--variant", help="mmdebstrap variant (e.g. minbase, buildd)")
    p.add_argument("--mirror", help="mmdebstrap mirror URL")
    p.add_argument("--include", help="mmdebstrap: extra packages, comma-separated")
    p.add_argument("--arch", help="mmdebstrap: architecture")
    p.add_argument(
        "--backend", help="overlay, dir, btrfs, zfs, squashfs or erofs (default: default-backend, else the best here)"
    )
    p.add_argument("--profile", default="default", help="profile sessions get (default: default)")
    p.add_argument("--description", default="")
    p.set_defaults(func=cmd_image_create)
    p = isub.add_parser("convert", help="write an image's current generation into another backend")
    p.add_argument("name")
    p.add_argument("--backend", required=True, help="overlay, dir, btrfs, zfs, squashfs or erofs")
    p.add_argument("--to", metavar="NEW", help="make a new image NEW (default: replace NAME, which must be idle)")
    _add_json(p)
    p.set_defaults(func=cmd_image_convert)
    p = isub.add_parser("list", help="list images")
    _add_json(p)
    p.set_defaults(func=cmd_image_list)
    p = isub.add_parser("info", help="show an image")
    p.add_argument("name")
    _add_json(p)
    p.set_defaults(func=cmd_image_info)
    p = isub.add_parser("history", help="list an image's generations")
    p.add_argument("name")
    _add_json(p)
    p.set_defaults(func=cmd_image_history)
    p = isub.add_parser("rollback", help="make an older generation current (default: the parent)")
    p.add_argument("name")
    p.add_argument("generation", nargs="?")
    p.set_defaults(func=cmd_image_rollback)
    p = isub.add_parser("remove", help="remove an image and all its generations")
    p.add_argument("name")
    p.add_argument("--force", action="store_true", help="end the image's sessions first")
    p.set_defaults(func=cmd_image_remove)
    p = isub.add_parser("gc", help="delete old generations (keeps the last N, current, and any in use)")
    p.add_argument("name", nargs="?")
    p.add_argument("--keep", type=int, metavar="N", help="generations to keep (default: retention)")
    p.add_argument("--dry-run", action="store_true", help="only say what would be deleted")
    _add_json(p)
    p.set_defaults(func=cmd_image_gc)

    # session ...
    session = sub.add_parser("session", help="begin, use, promote and end sessions")
    ssub = session.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True, parser_class=Parser)
    p = ssub.add_parser("begin", help="begin a session; prints its id")
    p.add_argument("image")
    p.add_argument("--name", help="session id to use instead of a generated one")
    p.add_argument("--maintenance", action="store_true", help="hold the image's writer lock (for promote)")
    _add_json(p)
    p.set_defaults(func=cmd_session_begin)
    p = ssub.add_parser("run", help="run a command in a session")
    p.add_argument("id")
    _add_run_options(p)
    p.add_argument("command", nargs="*", help="-- COMMAND [ARGS…]")
    p.set_defaults(func=cmd_session_run)
    p = ssub.add_parser("enter", help="a login shell in a session")
    p.add_argument("id")
    p.add_argument("-u", "--user", help="user to become (default: you)")
    p.add_argument("-d", "--directory", help="directory to start in (default: home)")
    p.set_defaults(func=cmd_session_enter)
    p = ssub.add_parser("end", help="end a session: kill its processes, unmount, remove its clone")
    p.add_argument("id")
    p.add_argument("--force", action="store_true", help="detach mounts that stay busy")
    p.set_defaults(func=cmd_session_end)
    p = ssub.add_parser("promote", help="turn a session into the image's next generation, and end it")
    p.add_argument("id")
    p.add_argument("-m", "--message", default="")
    p.set_defaults(func=cmd_session_promote)
    p = ssub.add_parser("list", help="list sessions")
    p.add_argument("--image", help="only sessions of IMAGE")
    _add_json(p)
    p.set_defaults(func=cmd_session_list)
    p = ssub.add_parser("info", help="show a session")
    p.add_argument("id")
    _add_json(p)
    p.set_defaults(func=cmd_session_info)
    p = ssub.add_parser("recover", help="remount sessions and clean up after a crash or reboot")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("id", nargs="?")
    target.add_argument("--all", action="store_true", help="everything in the state root")
    _add_json(p)
    p.set_defaults(func=cmd_session_recover)

    # run, locks, profile
    p = sub.add_parser("run", help="automatic session: begin, run a command, end")
    p.add_argument("image")
    _add_run_options(p)
    p.add_argument("command", nargs="*", help="-- COMMAND [ARGS…]")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("locks", help="list lock holders (stale ones included)")
    _add_json(p)
    p.set_defaults(func=cmd_locks)
    p = sub.add_parser("doctor", help="check the host and the state root")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--check", action="store_true", help="only compare the state root with mounts and records")
    what.add_argument("--backends", action="store_true", help="only say which backends this host supports")
    _add_json(p)
    p.set_defaults(func=cmd_doctor)
    profile = sub.add_parser("profile", help="list and show profiles")
    psub = profile.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True, parser_class=Parser)
    p = psub.add_parser("list", help="list profiles")
    _add_json(p)
    p.set_defaults(func=cmd_profile_list)
    p = psub.add_parser("show", help="show a profile")
    p.add_argument("name")
    _add_json(p)
    p.set_defaults(func=cmd_profile_show)
    return parser


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-u", "--user", help="user to run as (default: you)")
    p.add_argument("-d", "--directory", help="directory to run in (default: the current one)")
    p.add_argument("-p", "--preserve-environment", action="store_true", help="keep your environment")


# --- commands ------------------------------------------------------------------------


class Context:
    """What every command gets: parsed arguments and a lazily built engine."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.json = bool(getattr(args, "json", False))
        self.quiet = bool(args.quiet)
        from .output import TerminalProgress

        self.progress = TerminalProgress()
        if self.quiet:
            self.progress.enabled = False
        self._engine: Any = None

    @property
    def engine(self) -> Any:
        if self._engine is None:
            from core.engine import Engine

            self._engine = Engine(root=self.args.root, on_wait=self._waiting, progress=self.progress)
        return self._engine

    def _waiting(self, message: str) -> None:
        if not self.quiet:
            self.progress.done()
            print(f"roost: {message}", file=sys.stderr, flush=True)


def _command_argv(args: argparse.Namespace) -> list[str]:
    argv = list(args.command or []) + list(getattr(args, "after_dashes", None) or [])
    if not argv:
        from core.errors import BadInput

        raise BadInput("no command given (put it after --)")
    return argv


def cmd_image_create(ctx: Context) -> int:
    from core.importers import Source

    a = ctx.args
    if a.mmdebstrap:
        source = Source(
            "mmdebstrap", suite=a.mmdebstrap, variant=a.variant, mirror=a.mirror, include=a.include, arch=a.arch
        )
    else:
        if a.variant or a.mirror or a.include or a.arch:
            from core.errors import BadInput

            raise BadInput("--variant, --mirror, --include and --arch go with --mmdebstrap")
        source = Source("dir", path=a.from_dir) if a.from_dir else Source("tar", path=a.from_tar)
    try:
        info = ctx.engine.create_image(a.name, source, backend=a.backend, profile=a.profile, description=a.description)
    finally:
        ctx.progress.done()
    if ctx.json:
        from .output import emit_json

        emit_json(info.to_json())
    elif not ctx.quiet:
        print(f"created image {info.name} (generation 1, {info.backend})", file=sys.stderr)
    return 0


def cmd_image_convert(ctx: Context) -> int:
    a = ctx.args
    try:
        info = ctx.engine.convert_image(a.name, a.backend, new_name=a.to)
    finally:
        ctx.progress.done()
    if ctx.json:
        from .output import emit_json

        emit_json(info.to_json())
    elif not ctx.quiet:
        print(f"converted {a.name} into image {info.name} (generation 1, {info.backend})", file=sys.stderr)
    return 0


def cmd_image_list(ctx: Context) -> int:
    from .output import emit_json, human_size, table

    images = ctx.engine.list_images()
    if ctx.json:
        emit_json([i.to_json() for i in images])
    else:
        table(
            ["NAME", "BACKEND", "CURRENT", "PROFILE", "SESSIONS", "SIZE"],
            [[i.name, i.backend, i.current, i.profile, i.sessions, human_size(i.size)] for i in images],
        )
    return 0


def cmd_image_info(ctx: Context) -> int:
    from .output import emit_json, fields, human_size

    i = ctx.engine.image_info(ctx.args.name)
    if ctx.json:
        emit_json(i.to_json())
        return 0
    c = i.config
    fields(
        [
            ("Name", i.name),
            ("Description", i.description or None),
            ("Backend", i.backend),
            ("Storage", i.storage or None),
            ("Current generation", i.current),
            ("Generations", i.generations),
            ("Size", human_size(i.size)),
            ("Profile", i.profile),
            ("Sessions", i.sessions),
            ("Maintained by", i.writer),
            ("Users", ", ".join(c.users) if c and c.users else None),
            ("Groups", ", ".join(c.groups) if c and c.groups else None),
            ("Root users", ", ".join(c.root_users) if c and c.root_users else None),
            ("Aliases", ", ".join(c.aliases) if c and c.aliases else None),
        ]
    )
    return 0


def cmd_image_history(ctx: Context) -> int:
    from .output import emit_json, human_size, table

    gens = ctx.engine.image_history(ctx.args.name)
    if ctx.json:
        emit_json([g.to_json() for g in gens])
        return 0
    rows = []
    for g in reversed(gens):
        mark = "*" if g.current else ""
        use = "in use" if g.in_use else ""
        rows.append(
            [f"{g.generation}{mark}", g.parent, g.created, g.author, human_size(g.size), g.session, use, g.message]
        )
    table(["GEN", "PARENT", "CREATED", "AUTHOR", "SIZE", "SESSION", "USE", "MESSAGE"], rows)
    return 0


def cmd_image_rollback(ctx: Context) -> int:
    from core.names import check_generation

    gen = check_generation(ctx.args.generation) if ctx.args.generation is not None else None
    number = ctx.engine.rollback(ctx.args.name, gen)
    if not ctx.quiet:
        print(f"{ctx.args.name} is now at generation {number}", file=sys.stderr)
    return 0


def cmd_image_remove(ctx: Context) -> int:
    ctx.engine.remove_image(ctx.args.name, force=ctx.args.force)
    return 0


def cmd_image_gc(ctx: Context) -> int:
    from .output import emit_json, human_size

    results = ctx.engine.gc(ctx.args.name, keep=ctx.args.keep, dry_run=ctx.args.dry_run)
    if ctx.json:
        emit_json([r.to_json() for r in results])
        return 0
    verb = "would remove" if ctx.args.dry_run else "removed"
    for r in results:
        gens = ", ".join(map(str, r.removed)) or "nothing"
        print(f"{r.image}: {verb} {gens} ({human_size(r.freed)})")
    return 0


def cmd_session_begin(ctx: Context) -> int:
    s = ctx.engine.begin(ctx.args.image, name=ctx.args.name, maintenance=ctx.args.maintenance)
    if ctx.json:
        from .output import emit_json

        emit_json(
            {"id": s.id, "image": s.image, "generation": s.generation, "kind": s.kind, "mountpoint": s.mountpoint}
        )
    else:
        print(s.id)
    return 0


def cmd_session_run(ctx: Context) -> int:
    from core import process
    from core.errors import Conflict

    a = ctx.args
    argv = _command_argv(a)
    eng = ctx.engine
    launch = eng.launch(a.id, argv, user=a.user, directory=a.directory, preserve_env=a.preserve_environment)
    # Hold the session's lock shared until exec, so end cannot unmount underneath.
    lock = eng.lock(eng.store.session_lock_name(a.id), "run", exclusive=False)
    if eng.session_info(a.id, details=False).state != "mounted":
        lock.release()
        raise Conflict(f"session {a.id} ended or changed while the command was starting")
    sys.stdout.flush()
    sys.stderr.flush()
    process.exec_launch(launch)  # does not return; the lock is close-on-exec
    return 127


def cmd_session_enter(ctx: Context) -> int:
    from core import process

    a = ctx.args
    launch = ctx.engine.launch(a.id, None, user=a.user, directory=a.directory)
    sys.stdout.flush()
    sys.stderr.flush()
    process.exec_launch(launch)
    return 127


def cmd_session_end(ctx: Context) -> int:
    ctx.engine.end(ctx.args.id, force=ctx.args.force)
    return 0


def cmd_session_promote(ctx: Context) -> int:
    number = ctx.engine.promote(ctx.args.id, ctx.args.message)
    if not ctx.quiet:
        print(f"promoted {ctx.args.id} as generation {number}", file=sys.stderr)
    return 0


def cmd_session_list(ctx: Context) -> int:
    from .output import emit_json, table

    infos = ctx.engine.list_sessions(ctx.args.image)
    if ctx.json:
        emit_json([i.to_json() for i in infos])
        return 0
    table(
        ["ID", "IMAGE", "GEN", "KIND", "OWNER", "CREATED", "STATE"],
        [
            [
                i.session.id,
                i.session.image,
                i.session.generation,
                i.session.kind,
                i.session.owner,
                i.session.created,
                i.state,
            ]
            for i in infos
        ],
    )
    return 0


def cmd_session_info(ctx: Context) -> int:
    from .output import emit_json, fields, human_size

    i = ctx.engine.session_info(ctx.args.id)
    if ctx.json:
        emit_json(i.to_json())
        return 0
    s = i.session
    fields(
        [
            ("Id", s.id),
            ("Image", s.image),
            ("Generation", s.generation),
            ("Kind", s.kind),
            ("Owner", s.owner),
            ("Created", s.created),
            ("State", i.state),
            ("Backend", s.backend),
            ("Profile", s.profile),
            ("Mount point", s.mountpoint),
            ("Processes", i.processes),
            ("Changes", human_size(i.changes)),
        ]
    )
    return 0


def cmd_session_recover(ctx: Context) -> int:
    from .output import emit_json

    report = ctx.engine.recover(None if ctx.args.all else ctx.args.id)
    if ctx.json:
        emit_json(report)
    else:
        for line in report:
            print(line)
    return 0


def cmd_run(ctx: Context) -> int:
    a = ctx.args
    argv = _command_argv(a)
    code: int = ctx.engine.run_auto(
        a.image, argv, user=a.user, directory=a.directory, preserve_env=a.preserve_environment
    )
    return code


def cmd_locks(ctx: Context) -> int:
    from .output import emit_json, table

    states = ctx.engine.locks()
    if ctx.json:
        emit_json([s.to_json() for s in states])
        return 0
    table(
        ["LOCK", "MODE", "PID", "USER", "OPERATION", "SINCE", "STATE"],
        [[s.lock, s.mode, s.pid, s.user, s.operation, s.since, "stale" if s.stale else "live"] for s in states],
    )
    return 0


def cmd_doctor(ctx: Context) -> int:
    from .output import emit_json, table

    a = ctx.args
    report = [] if a.check else ctx.engine.backends()
    default = None if a.check else ctx.engine.default_backend()
    problems = [] if a.backends else ctx.engine.check()
    if ctx.json:
        out: dict[str, Any] = {}
        if not a.check:
            out["backends"] = [
                {"name": n, "available": why is None, "why": why, "summary": what} for n, why, what in report
            ]
            out["default"] = default
        if not a.backends:
            out["problems"] = problems
        emit_json(out)
    else:
        if report:
            table(
                ["BACKEND", "AVAILABLE", "WHY NOT / WHAT IT IS"],
                [
                    [n, "no" if why else ("yes (default)" if n == default else "yes"), why or what]
                    for n, why, what in report
                ],
            )
            if not a.backends:
                print()
        for line in problems:
            print(line)
    if a.backends:
        return 0
    if problems:
        print(f"{PROG}: {len(problems)} problem(s) found", file=sys.stderr)
        return 5
    if not ctx.json and not ctx.quiet:
        print("no problems found", file=sys.stderr)
    return 0


def cmd_profile_list(ctx: Context) -> int:
    from core.profiles import load_profile, profile_names

    from .output import emit_json, table

    site = ctx.engine.settings.profiles_dir
    profiles = [load_profile(n, site) for n in profile_names(site)]
    if ctx.json:
        emit_json([{"name": p.name, "description": p.description, "path": p.path} for p in profiles])
    else:
        table(["NAME", "DESCRIPTION", "FILE"], [[p.name, p.description, p.path] for p in profiles])
    return 0


def cmd_profile_show(ctx: Context) -> int:
    from core.profiles import load_profile

    from .output import emit_json

    p = load_profile(ctx.args.name, ctx.engine.settings.profiles_dir)
    if ctx.json:
        emit_json(
            {
                "name": p.name,
                "path": p.path,
                "description": p.description,
                "dev": p.dev,
                "mounts": [m.to_json() for m in p.mounts],
                "copy-files": list(p.copy_files),
                "nss-databases": list(p.nss_databases),
                "environment": {"keep": list(p.env_keep), "set": dict(p.env_set)},
            }
        )
    else:
        with open(p.path, encoding="utf-8") as f:
            sys.stdout.write(f.read())
    return 0


# --- main ----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from core.errors import RoostError

    # Everything after the first "--" is a command to run, never options for roost.
    after: list[str] | None = None
    if "--" in argv:
        cut = argv.index("--")
        argv, after = argv[:cut], argv[cut + 1 :]
    try:
        args = build_parser().parse_args(argv)
        if after is not None:
            if not hasattr(args, "command") or getattr(args, "func", None) not in (cmd_session_run, cmd_run):
                raise UsageError("'--' only goes before the command of 'session run' and 'run'")
            if args.command:
                raise UsageError(f"unexpected {args.command[0]!r} before '--'")
            args.after_dashes = after
    except UsageError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    if args.group is None:
        if args.headless:
            print(f"{PROG}: --headless needs a command (see {PROG} --help)", file=sys.stderr)
            return 2
        return _console(args)
    func: Callable[[Context], int] = args.func
    ctx = Context(args)
    try:
        return func(ctx)
    except RoostError as e:
        ctx.progress.done()
        print(f"{PROG}: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        ctx.progress.done()
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


def _console(args: argparse.Namespace) -> int:
    try:
        from tui.app import run_console  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        build_parser().print_help()
        return 0
    code: int = run_console(root=args.root)
    return code
