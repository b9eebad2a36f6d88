"""The commands build tools run thousands of times a day, without argparse.

``roost session run ID -- CMD`` does not even load the engine: its happy path
costs little more than the interpreter's own start: read one record, check
access, take the session's lock shared (so ``end`` cannot unmount
underneath), chroot and exec, with no fork. Anything unusual (an unknown
option, a session that needs recovery, a busy lock, an error to report)
returns and the full command line handles it, with its proper messages and
exit codes.

``session begin``, ``session end`` and ``run`` skip argparse (and the
milliseconds it costs to import and build): :func:`dispatch` recognises their
plain forms and calls the same command functions as roost.cli with the same
argument names; anything else (``--help``, an unknown option) goes to
argparse.

Both read the global options with roost.global_options, the splitter every
part of the command line shares, and take only forms argparse reads the same
way (tests/test_argv.py checks them against the parser's option tables).
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    import pwd
    from collections.abc import Callable, Sequence

    from core.actor import Actor
    from core.settings import Settings

    from .session_commands import Context


def _value(argv: Sequence[str], i: int) -> str | None:
    """The value of the option at *i*, if argparse would take the next word as one."""
    if i + 1 < len(argv) and not argv[i + 1].startswith("-"):
        return argv[i + 1]
    return None


#: ``--network``'s choices (roost.cli's _add_isolation_options; tests/test_argv.py checks they agree).
NETWORKS = ("host", "none", "loopback")


def _isolation_option(opts: dict[str, object], flag: str, value: str) -> bool:
    """Take ``--network VALUE`` or ``--limit VALUE`` as argparse would; False where argparse refuses."""
    if flag == "--network":
        if value not in NETWORKS:
            return False
        opts["network"] = value
    else:
        opts["limit"] = [*(opts.get("limit") or ()), value]  # type: ignore[misc]
    return True


def _glued_isolation_option(opts: dict[str, object], arg: str) -> bool | None:
    """``--network=VALUE`` or ``--limit=VALUE``: taken (True), refused (False), or not one (None)."""
    flag, glued, value = arg.partition("=")
    if not glued or flag not in ("--network", "--limit"):
        return None
    return _isolation_option(opts, flag, value)


def _run_options(argv: Sequence[str], i: int, opts: dict[str, object], *, isolation: bool = False) -> str | None:
    """Parse ``[-u U] [-d D] [-p] POSITIONAL [--] CMD…`` from *i*; the positional, or None.

    With *isolation* (``run``, which begins a session), ``--network`` and
    ``--limit`` too.

    Only in the forms argparse reads the same way: a command without ``--``
    is taken only if none of its words starts with ``-`` (argparse would read
    them as options of roost).
    """
    positional = None
    n = len(argv)
    opts.update(user=None, directory=None, preserve_environment=False, network=None, limit=None)
    dashes = False
    options_after_positional = False
    while i < n:
        arg = argv[i]
        if arg == "--":
            i += 1
            dashes = True
            break
        glued = _glued_isolation_option(opts, arg) if isolation else None
        if glued is False:
            return None
        if glued:
            i += 1
            options_after_positional = positional is not None
        elif arg in ("-u", "--user", "-d", "--directory") or (isolation and arg in ("--network", "--limit")):
            value = _value(argv, i)
            if value is None:
                return None
            if arg in ("--network", "--limit"):
                if not _isolation_option(opts, arg, value):
                    return None
            else:
                opts["user" if arg in ("-u", "--user") else "directory"] = value
            i += 2
            options_after_positional = positional is not None
        elif arg in ("-p", "--preserve-environment"):
            opts["preserve_environment"] = True
            i += 1
            options_after_positional = positional is not None
        elif arg.startswith("-"):
            return None
        elif positional is None:
            positional = arg
            i += 1
        else:
            break
    command = list(argv[i:])
    if not dashes and any(word.startswith("-") for word in command):
        return None
    if not dashes and options_after_positional and command:
        # argparse took the command (nargs="*") as empty with the positional, before the
        # options: a word after them is one it refuses ("unrecognized arguments")
        return None
    opts["command"] = command
    opts["after_dashes"] = None
    if positional is None or not command:
        return None
    return positional


class _Namespace:
    """Attribute access to parsed options, like argparse.Namespace."""

    def __init__(self, values: dict[str, object]) -> None:
        self.__dict__.update(values)


def dispatch(argv: Sequence[str]) -> int | None:
    """Run ``session begin``, ``session end`` or ``run`` in their plain forms; None otherwise."""
    parsed = plain_command(argv)
    if parsed is None:
        return None
    func, opts = parsed
    from .session_commands import execute

    return execute(func, _Namespace(opts))


def plain_command(argv: Sequence[str]) -> tuple[Callable[[Context], int], dict[str, object]] | None:
    """The command function and its arguments, named and set as argparse would, for the plain
    forms of ``session begin``, ``session end`` and ``run``; None for anything else."""
    from .global_options import split

    found = split(argv)
    if found is None:
        return None
    opts, i = dict(found.values), found.index
    rest = list(argv[i + 2 :])
    if argv[i : i + 2] == ["session", "begin"]:
        opts.update(image=None, name=None, maintenance=False, network=None, limit=None)
        j = 0
        while j < len(rest):
            arg = rest[j]
            glued = _glued_isolation_option(opts, arg)
            if glued is False:
                return None
            if glued:
                pass
            elif arg == "--maintenance":
                opts["maintenance"] = True
            elif arg == "--json":
                opts["json"] = True
            elif arg == "--name" and _value(rest, j) is not None:
                j += 1
                opts["name"] = rest[j]
            elif arg.startswith("--name="):
                opts["name"] = arg[7:]
            elif arg in ("--network", "--limit") and _value(rest, j) is not None:
                j += 1
                if not _isolation_option(opts, arg, rest[j]):
                    return None
            elif arg.startswith("-") or opts["image"] is not None:
                return None
            else:
                opts["image"] = arg
            j += 1
        if opts["image"] is None:
            return None
        from .session_commands import cmd_session_begin as func
    elif argv[i : i + 2] == ["session", "end"]:
        opts["force"] = "--force" in rest
        positional = [a for a in rest if a != "--force"]
        if len(positional) != 1 or positional[0].startswith("-"):
            return None
        opts["id"] = positional[0]
        from .session_commands import cmd_session_end as func
    elif argv[i : i + 1] == ["run"]:
        image = _run_options(argv, i + 1, opts, isolation=True)
        if image is None:
            return None
        opts["image"] = image
        from .session_commands import cmd_run as func
    else:
        return None
    return func, opts


def parse(argv: Sequence[str]) -> tuple[str | None, str, list[str], str | None, str | None, bool] | None:
    """(root, id, command, user, directory, preserve) for a plain ``session run``, else None."""
    from .global_options import split  # here: schroot -r reads this module, not the global options

    found = split(argv)
    if found is None:
        return None
    opts, i = dict(found.values), found.index
    if argv[i : i + 2] != ["session", "run"]:
        return None
    sid = _run_options(argv, i + 2, opts)
    if sid is None:
        return None
    root = opts["root"]
    return (
        root if isinstance(root, str) else None,
        sid,
        list(opts["command"]),  # type: ignore[call-overload]
        opts["user"],  # type: ignore[return-value]
        opts["directory"],  # type: ignore[return-value]
        bool(opts["preserve_environment"]),
    )


def run(argv: Sequence[str]) -> None:
    """Exec the command if everything is as expected; return (doing nothing) otherwise.

    For anyone but root (without ``--system``), the session is the user's own
    rootless one: core.rootless.fast joins its holder.
    """
    parsed = parse(argv)
    if parsed is None:
        return
    root, sid, command, user, directory, preserve = parsed
    from .global_options import split

    globals_ = split(argv)
    assert globals_ is not None  # parse() split it
    system, user_mode = globals_.values["system_mode"], globals_.values["user_mode"]
    if os.geteuid() != 0:
        if system:
            return  # refused, with its line, by the full path
        from core.errors import RoostError
        from core.rootless import config, fast

        try:
            conf = config.load(root)
        except RoostError:
            return
        fast.run(conf, sid, command, user=user, directory=directory, preserve_env=preserve)
        return
    if user_mode:
        return  # refused, with its line, by the full path
    from core import process
    from core.actor import Actor
    from core.errors import RoostError

    found = live_session(root, sid)
    if found is None:
        return
    conf, record = found
    try:
        target = may_run(Actor.current(), record, sid, user, conf)
        launch = process.prepare(record, command, user=target, directory=directory, preserve_env=preserve)
    except (RoostError, TypeError, ValueError):
        return
    lock = shared_session_lock(conf.run_root, sid)
    if lock is None:
        return
    process.exec_launch(launch)  # the lock's descriptor is close-on-exec


def live_session(root: str | None, sid: str) -> tuple[Settings, dict[str, object]] | None:
    """(settings, record) of session *sid* if it is active and mounted; None when the engine must decide.

    Reads the record with the C JSON scanner and never raises: a bad name, an
    unreadable configuration or record, a session in another state or whose
    clone is not mounted (it needs recovery) all leave the decision, and the
    message, to the engine.
    """
    from core import fastjson, names, settings, trust
    from core.errors import RoostError

    if not names.is_valid_name(sid) or names.is_reserved(sid):
        return None
    try:
        conf = settings.load(root)
        sessions_dir = os.path.join(conf.state_root, "sessions")
        for path, what in ((conf.state_root, "state root"), (sessions_dir, "session directory")):
            trust.check_dir(path, what)
        fd = os.open(os.path.join(sessions_dir, sid + ".json"), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with open(fd, encoding="utf-8") as f:
            if trust.unsafe_reason(os.fstat(fd), directory=False) is not None:
                return None  # a record someone else could have written: the engine refuses it with its message
            record = fastjson.loads(f.read())
    except (OSError, ValueError, RoostError):
        return None
    if not isinstance(record, dict) or record.get("state") != "active" or record.get("id") != sid:
        return None
    mountpoint = record.get("mountpoint")
    gate = os.path.join(conf.run_root, "mnt", sid)
    if not isinstance(mountpoint, str) or mountpoint not in (gate + "/root", gate):
        return None  # only a session's own mount point is ever entered
    try:
        if os.stat(mountpoint).st_dev == os.stat(os.path.dirname(mountpoint)).st_dev:
            return None  # not mounted: needs recovery
        kept = record.get("netns")  # network: none keeps a namespace file mounted (core.netns)
        if kept is not None and (
            not isinstance(kept, str) or os.stat(kept).st_dev == os.stat(os.path.dirname(kept)).st_dev
        ):
            return None  # not kept (a reboot): needs recovery
    except OSError:
        return None
    return conf, record


def may_run(actor: Actor, record: dict[str, object], sid: str, user: str | None, conf: Settings) -> pwd.struct_passwd:
    """The passwd entry to run as in *record*'s session, if the policy lets *actor*; raises NotPermitted or NotFound."""
    from core import policy, process

    target = process.resolve_user(user, actor.uid)
    session_access = record.get("access") or {}
    owner = record.get("uid", 0)
    image = record.get("image")
    if not isinstance(session_access, dict) or not isinstance(owner, int) or not isinstance(image, str):
        raise TypeError("malformed session record")
    rules = policy.Policy(conf.admin_group)
    rules.check(
        actor, policy.SESSION_RUN, policy.SessionTarget(sid, image, owner, session_access), as_uid=target.pw_uid
    )
    return target


def shared_session_lock(run_root: str, sid: str) -> int | None:
    """Session *sid*'s lock, shared, if it can be had at once (see :func:`_shared_lock`)."""
    return _shared_lock(os.path.join(run_root, "locks", f"session.{sid}.lock"))


def _shared_lock(path: str) -> int | None:
    """The session lock, shared, if it can be had at once and is the live lock file."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        if os.fstat(fd).st_ino != os.stat(path, follow_symlinks=False).st_ino:
            raise OSError
    except OSError:
        os.close(fd)
        return None
    return fd
