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
import os
import sys

from . import __version__, global_options
from .handlers import (
    PROG,
    cmd_batch,
    cmd_doctor,
    cmd_image_convert,
    cmd_image_create,
    cmd_image_diff,
    cmd_image_export,
    cmd_image_gc,
    cmd_image_history,
    cmd_image_import_schroot,
    cmd_image_info,
    cmd_image_list,
    cmd_image_publish,
    cmd_image_remove,
    cmd_image_rollback,
    cmd_locks,
    cmd_profile_list,
    cmd_profile_show,
    cmd_run,
    cmd_session_begin,
    cmd_session_diff,
    cmd_session_end,
    cmd_session_enter,
    cmd_session_info,
    cmd_session_list,
    cmd_session_promote,
    cmd_session_recover,
    cmd_session_run,
    execute,
)

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at start-up
    from collections.abc import Sequence
    from typing import Any, NoReturn


class UsageError(Exception):
    """argparse found bad arguments; reported as one line, exit 2."""


# Building the parser is most of what a command that is not on the fast path costs
# before it does anything (BENCHMARKS.md, "Start-up"). Two things argparse does on
# every option are not needed: it translates each of its messages with gettext,
# which searches the disk for catalogues every time, though Python ships none for it
# and roost speaks English; and it makes a help formatter (to check the option's
# metavar), which imports shutil, and with it zlib, bz2 and lzma, for the
# terminal's width.
argparse._ = str  # type: ignore[attr-defined]


def _columns() -> int:
    """The terminal's width as shutil.get_terminal_size reads it: $COLUMNS, else standard output's, else 80."""
    value = os.environ.get("COLUMNS", "")
    if value.isdigit() and int(value) > 0:
        return int(value)
    stream = sys.__stdout__
    try:
        return (os.get_terminal_size(stream.fileno()).columns or 80) if stream is not None else 80
    except (ValueError, OSError):
        return 80


class _Formatter(argparse.HelpFormatter):
    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24, width: int | None = None):
        super().__init__(prog, indent_increment, max_help_position, _columns() - 2 if width is None else width)


class Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def _add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")


def build_parser(group: str | None = None) -> Parser:
    """The command line; with *group* (``image`` or ``session``), only that group's subcommands of the two
    large groups: building all of them costs some 20 ms, more than the rest of most commands."""
    parser = Parser(
        prog=PROG,
        description="Chroot session manager for Linux build hosts.",
        epilog="With no command, roost opens the operator console.",
        add_help=False,  # -h is one of the global options
    )
    global_options.add_to(parser, version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="group", metavar="COMMAND", parser_class=Parser)

    if group in (None, "image"):
        _add_image_commands(sub)
    if group in (None, "session"):
        _add_session_commands(sub)

    # run, locks, profile
    p = sub.add_parser("run", help="automatic session: begin, run a command, end")
    p.add_argument("image")
    _add_run_options(p)
    _add_isolation_options(p)
    p.add_argument("command", nargs="*", help="-- COMMAND [ARGS…]")
    p.set_defaults(func=cmd_run)
    # Listed for --help only: main() hands `roost schroot …` to the front door before argparse.
    sub.add_parser("schroot", help="the schroot 1.6 command line sbuild uses (roost schroot --help)", add_help=False)
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
    p = sub.add_parser("batch", help="run a plan: steps such as begin, run, promote, end, gc from a YAML file")
    p.add_argument("plan", metavar="PLAN", help="the plan file (schema: docs/batch.md), or - for standard input")
    p.add_argument("--check", action="store_true", help="only check the plan; run nothing")
    p.add_argument("--host", action="append", metavar="HOST", help="run the plan on HOST (repeatable: in parallel)")
    _add_json(p)
    p.set_defaults(func=cmd_batch)
    from .fleet import cmd_summary

    p = sub.add_parser("summary", help="this host's images, sessions, locks and load (what other hosts poll)")
    _add_json(p)
    p.set_defaults(func=cmd_summary)
    return parser


def _add_image_commands(sub: argparse._SubParsersAction[Parser]) -> None:
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
    p = isub.add_parser("import-schroot", help="create images from schroot's chroots (schroot.conf, chroot.d)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("files", nargs="*", default=[], metavar="FILE", help="schroot key files to read")
    what.add_argument("--all", action="store_true", help="schroot.conf and every chroot.d file")
    p.add_argument("--schroot-dir", metavar="DIR", help="schroot's configuration directory (default /etc/schroot)")
    p.add_argument("--chroot", action="append", metavar="NAME", help="only this chroot (repeatable)")
    p.add_argument("--backend", help="backend of the new images (default from roost.yaml)")
    p.add_argument("--dry-run", action="store_true", help="only say what would be imported")
    _add_json(p)
    p.set_defaults(func=cmd_image_import_schroot)
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
    p = isub.add_parser(
        "diff", help="what changed from GEN_A (default: GEN_B's parent) to GEN_B (default: current): packages and files"
    )
    p.add_argument("name")
    p.add_argument("generation", nargs="?", metavar="GEN_A", help="from this generation (default: GEN_B's parent)")
    p.add_argument("against", nargs="?", metavar="GEN_B", help="to this generation (default: the current one)")
    p.add_argument("--summary", action="store_true", help="packages and counts only, no file list")
    _add_json(p)
    p.set_defaults(func=cmd_image_diff)
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
    p = isub.add_parser("export", help="write a generation as a tarball that image create --from-tar restores exactly")
    p.add_argument("name")
    p.add_argument("file", help="FILE.tar, .tar.gz, .tar.xz, .tar.zst or .tar.bz2 (the suffix picks the compression)")
    p.add_argument("--generation", metavar="N", help="the generation to export (default: current)")
    p.add_argument("--force", action="store_true", help="replace FILE if it exists")
    _add_json(p)
    p.set_defaults(func=cmd_image_export)
    _add_fleet_commands(isub)
    p = isub.add_parser("publish", help="write a generation as the tarball sbuild's unshare mode builds in")
    p.add_argument("name")
    p.add_argument(
        "--sbuild-tarball",
        nargs="?",
        const="",
        required=True,
        metavar="DIR",
        help="write DIR/SUITE-ARCH.tar.zst (default DIR: your ~/.cache/sbuild), atomically",
    )
    p.add_argument("--name", dest="tarball_name", metavar="NAME", help="the tarball's name (default: SUITE-ARCH)")
    p.add_argument(
        "--compression", choices=("zstd", "gzip", "xz", "none"), default="zstd", help="default: zstd (.tar.zst)"
    )
    p.add_argument("--generation", metavar="N", help="the generation to publish (default: current)")
    _add_json(p)
    p.set_defaults(func=cmd_image_publish)


def _add_session_commands(sub: argparse._SubParsersAction[Parser]) -> None:
    from .isolation import cmd_session_network

    session = sub.add_parser("session", help="begin, use, promote and end sessions")
    ssub = session.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True, parser_class=Parser)
    p = ssub.add_parser("begin", help="begin a session; prints its id")
    p.add_argument("image")
    p.add_argument("--name", help="session id to use instead of a generated one")
    p.add_argument("--maintenance", action="store_true", help="hold the image's writer lock (for promote)")
    _add_isolation_options(p)
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
    p = ssub.add_parser("network", help="switch a live session's network for the commands it runs next")
    p.add_argument("id")
    p.add_argument("network", choices=("host", "none", "loopback"))
    p.set_defaults(func=cmd_session_network)
    p = ssub.add_parser("diff", help="what a session changed against its generation: packages and files")
    p.add_argument("id")
    p.add_argument("--summary", action="store_true", help="packages and counts only, no file list")
    _add_json(p)
    p.set_defaults(func=cmd_session_diff)
    p = ssub.add_parser("recover", help="remount sessions and clean up after a crash or reboot")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("id", nargs="?")
    target.add_argument("--all", action="store_true", help="everything in the state root")
    _add_json(p)
    p.set_defaults(func=cmd_session_recover)


def _add_isolation_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--network", choices=("host", "none", "loopback"), help="the session's network (default: image.yaml, profile)"
    )
    p.add_argument(
        "--limit",
        action="append",
        metavar="KEY=VALUE",
        help="a resource limit: memory, swap, pids, cpu-weight, cpu-quota, io-weight (repeatable)",
    )


def _add_fleet_commands(isub: argparse._SubParsersAction[Parser]) -> None:
    """image push, pull and the plumbing they run on the other host (roost/fleet.py)."""
    from .fleet import cmd_image_inventory, cmd_image_pull, cmd_image_push, cmd_image_receive, cmd_image_send

    backend = "backend of the image if the receiver does not have it yet (default: the sender's, if it can)"
    p = isub.add_parser("push", help="copy the generations HOST lacks of image NAME to HOST (over ssh)")
    p.add_argument("name")
    p.add_argument("host", metavar="HOST", help="ssh://[user@]host[:port] or a name in hosts.yaml")
    p.add_argument("--backend", help=backend)
    _add_json(p)
    p.set_defaults(func=cmd_image_push)
    p = isub.add_parser("pull", help="copy the generations this host lacks of image NAME from HOST (over ssh)")
    p.add_argument("host", metavar="HOST", help="ssh://[user@]host[:port] or a name in hosts.yaml")
    p.add_argument("name")
    p.add_argument("--backend", help=backend)
    _add_json(p)
    p.set_defaults(func=cmd_image_pull)
    p = isub.add_parser("inventory", help="what this host has of NAME, as JSON (what push asks the receiver)")
    p.add_argument("name")
    _add_json(p)
    p.set_defaults(func=cmd_image_inventory)
    p = isub.add_parser("send", help="write NAME's image stream to stdout for the inventory read on stdin (pull)")
    p.add_argument("name")
    p.add_argument("--backend", help=backend)
    p.set_defaults(func=cmd_image_send)
    p = isub.add_parser("receive", help="read an image stream on stdin into NAME (push)")
    p.add_argument("name")
    p.add_argument("--inventory-first", action="store_true", help="first print the inventory of NAME as one JSON line")
    _add_json(p)
    p.set_defaults(func=cmd_image_receive)


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-u", "--user", help="user to run as (default: you)")
    p.add_argument("-d", "--directory", help="directory to run in (default: the current one)")
    p.add_argument("-p", "--preserve-environment", action="store_true", help="keep your environment")


# --- main ----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    if words and words[0] == "__complete":  # hidden: what the shell completion scripts call
        from .complete import main as complete

        return complete(words[1:])
    argv = list(sys.argv[1:] if argv is None else argv)
    door = schroot_request(argv)
    if door is not None:
        from .schroot.door import in_roost

        return in_roost(*door)
    try:
        args = parse(argv)
    except UsageError as e:
        from core.errors import one_line

        print(f"{PROG}: {one_line(str(e))}", file=sys.stderr)
        return 2
    if args.group is None:
        if args.headless:
            print(f"{PROG}: --headless needs a command (see {PROG} --help)", file=sys.stderr)
            return 2
        return _console(args)
    return execute(args.func, args)


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """The arguments the command functions get, as the full command line reads *argv*; raises UsageError."""
    argv = list(argv)
    # Everything after the first "--" is a command to run, never options for roost.
    after: list[str] | None = None
    if "--" in argv:
        cut = argv.index("--")
        argv, after = argv[:cut], argv[cut + 1 :]
    found = global_options.split(argv)
    word = argv[found.index] if found is not None and found.index < len(argv) else None
    args = build_parser(word if word in ("image", "session") else None).parse_args(argv)
    if after is not None:
        if not hasattr(args, "command") or getattr(args, "func", None) not in (cmd_session_run, cmd_run):
            raise UsageError("'--' only goes before the command of 'session run' and 'run'")
        if args.command:
            raise UsageError(f"unexpected {args.command[0]!r} before '--'")
        args.after_dashes = after
    return args


def schroot_request(argv: Sequence[str]) -> tuple[dict[str, object], list[str]] | None:
    """(global options, the front door's arguments) when the command of *argv* is ``schroot``.

    Where the command begins is decided as for every other command: by the
    splitter of global options for their plain forms, else by argparse itself,
    on the words before each ``schroot`` (the first that parse as global
    options alone), so ``roost --head schroot -l`` reaches the door as
    ``roost --headless schroot -l`` does. Nothing after ``--`` is a command.
    """
    found = global_options.split(argv)
    if found is not None:
        if argv[found.index : found.index + 1] == ["schroot"]:
            return found.values, list(argv[found.index + 1 :])
        return None
    end = argv.index("--") if "--" in argv else len(argv)
    for k in range(end):
        if argv[k] != "schroot":
            continue
        try:
            args = build_parser().parse_args(argv[:k])
        except UsageError:
            continue  # "schroot" is an argument of something else here
        if args.group is None:
            return global_options.values_of(args), list(argv[k + 1 :])
    return None


def _console(args: argparse.Namespace) -> int:
    return console(args)


def console(args: argparse.Namespace, hosts: list[str] | None = None) -> int:
    """The operator console (with *hosts*: those hosts beside this one, else hosts.yaml's)."""
    from core.errors import RoostError

    from .handlers import mode_of

    try:
        mode = mode_of(args)
    except RoostError as e:
        print(f"roost: {e}", file=sys.stderr)
        return e.exit_code
    try:
        from tui.app import run_console  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        build_parser().print_help()
        return 0
    code: int = run_console(root=args.root, hosts=hosts, mode=mode)
    return code
