"""The schroot-compatible front door: ``roost schroot …`` and ``roost-schroot``.

It accepts the schroot 1.6 command line that sbuild and people use and maps
it onto the engine:

=====================  ====================================================
``chroot:NAME``        an image, or an alias of one
``source:NAME``        a maintenance session of the image, promoted into
                       its next generation when it ends successfully
``session:ID``         an existing session
=====================  ====================================================

Actions: ``-l`` (list), ``-i`` (info, in schroot's text format, which sbuild
scrapes), ``--location``, ``-b`` (begin; prints the session id), ``-r``
(run), ``-e`` (end), ``--recover-session``, and the automatic session (no
action: begin, run, end). Semantics follow schroot 1.6 where build tools
depend on them: the working-directory rules, the environment (``SCHROOT_*``
variables, the environment filter of ``-p``), and exit codes (a command's own
status; 1 for everything that goes wrong around it, a command killed by a
signal included). Deliberate differences are listed in docs/schroot.md.
"""

from __future__ import annotations

import os
import sys

from . import __version__

# Nothing heavy at import time: `-r`, which sbuild runs a few hundred times per
# build, takes a fast path (run_fast) that needs neither the engine nor YAML,
# dataclasses, typing, signal or json.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from core.engine import Engine
    from core.imageconf import ImageConfig
    from core.process import Launch
    from core.records import Session

PROG = "roost"
#: The schroot command line this front door follows.
SCHROOT_VERSION = "1.6.13"
#: schroot exits 1 for every failure of its own; a command's status passes through.
EXIT_FAILURE = 1

ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
USER_PATH = "/usr/local/bin:/usr/bin:/bin"

#: schroot's default ``environment-filter``: removed from the environment ``-p`` passes in.
FILTERED_NAMES = frozenset(
    {
        "BASH_ENV", "CDPATH", "ENV", "HOSTALIASES", "IFS", "KRB5_CONFIG", "KRBCONFDIR", "KRBTKFILE",
        "KRB_CONF", "LOCALDOMAIN", "NLSPATH", "PATH_LOCALE", "RES_OPTIONS", "TERMINFO", "TERMINFO_DIRS",
        "TERMPATH",
    }
)  # fmt: skip
FILTERED_PREFIXES = ("LD_",)
ENVIRONMENT_FILTER = (
    "^(BASH_ENV|CDPATH|ENV|HOSTALIASES|IFS|KRB5_CONFIG|KRBCONFDIR|KRBTKFILE|KRB_CONF|LD_.*|LOCALDOMAIN|"
    "NLSPATH|PATH_LOCALE|RES_OPTIONS|TERMINFO|TERMINFO_DIRS|TERMPATH)$"
)

NAMESPACES = ("chroot", "source", "session")


class UsageError(Exception):
    """The command line is malformed (one line, exit 1, like schroot)."""


# --- the command line ----------------------------------------------------------------

ACTIONS = {
    "help": "-h/--help",
    "version": "-V/--version",
    "list": "-l/--list",
    "info": "-i/--info",
    "config": "--config",
    "location": "--location",
    "automatic": "--automatic-session",
    "begin": "-b/--begin-session",
    "recover": "--recover-session",
    "run": "-r/--run-session",
    "end": "-e/--end-session",
}


class Options:
    """A parsed schroot command line."""

    __slots__ = (
        "action",
        "all_chroots",
        "all_sessions",
        "all_sources",
        "chroots",
        "command",
        "directory",
        "exclude_aliases",
        "force",
        "options",
        "preserve",
        "quiet",
        "session_name",
        "shell",
        "user",
        "verbose",
    )

    def __init__(self) -> None:
        self.action: str | None = None
        self.chroots: list[str] = []
        self.all_chroots = False
        self.all_sources = False
        self.all_sessions = False
        self.exclude_aliases = False
        self.directory: str | None = None
        self.user: str | None = None
        self.preserve = False
        self.shell: str | None = None
        self.options: list[str] = []
        self.session_name: str | None = None
        self.force = False
        self.quiet = False
        self.verbose = False
        self.command: list[str] = []

    @property
    def selects_all(self) -> bool:
        return self.all_chroots or self.all_sources or self.all_sessions


#: long option -> (takes a value, what it sets)
_LONG: dict[str, tuple[bool, str]] = {
    "help": (False, "action:help"),
    "version": (False, "action:version"),
    "list": (False, "action:list"),
    "info": (False, "action:info"),
    "config": (False, "action:config"),
    "location": (False, "action:location"),
    "automatic-session": (False, "action:automatic"),
    "begin-session": (False, "action:begin"),
    "recover-session": (False, "action:recover"),
    "run-session": (False, "action:run"),
    "end-session": (False, "action:end"),
    "quiet": (False, "quiet"),
    "verbose": (False, "verbose"),
    "debug": (True, "debug"),
    "chroot": (True, "chroot"),
    "all": (False, "all"),
    "all-chroots": (False, "all_chroots"),
    "all-source-chroots": (False, "all_sources"),
    "all-sessions": (False, "all_sessions"),
    "exclude-aliases": (False, "exclude_aliases"),
    "directory": (True, "directory"),
    "user": (True, "user"),
    "preserve-environment": (False, "preserve"),
    "shell": (True, "shell"),
    "option": (True, "option"),
    "session-name": (True, "session_name"),
    "force": (False, "force"),
}
_SHORT: dict[str, str] = {
    "h": "help",
    "V": "version",
    "l": "list",
    "i": "info",
    "q": "quiet",
    "v": "verbose",
    "c": "chroot",
    "a": "all",
    "d": "directory",
    "u": "user",
    "p": "preserve-environment",
    "s": "shell",
    "o": "option",
    "b": "begin-session",
    "r": "run-session",
    "e": "end-session",
    "n": "session-name",
    "f": "force",
}


def _long_option(name: str) -> str:
    """The long option *name* stands for: exact, or an unambiguous prefix (as schroot allows)."""
    if name in _LONG:
        return name
    matches = [o for o in _LONG if o.startswith(name)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise UsageError(f"unrecognised option '--{name}'")
    raise UsageError(f"option '--{name}' is ambiguous ({', '.join('--' + m for m in sorted(matches))})")


def _apply(opts: Options, option: str, value: str | None) -> None:
    _, what = _LONG[option]
    if what.startswith("action:"):
        action = what[7:]
        if opts.action is not None and opts.action != action:
            raise UsageError(f"only one action may be given ({ACTIONS[opts.action]} and {ACTIONS[action]})")
        opts.action = action
    elif what == "chroot":
        assert value is not None
        opts.chroots.append(value)
    elif what == "all":
        opts.all_chroots = opts.all_sources = opts.all_sessions = True
    elif what == "option":
        assert value is not None
        opts.options.append(value)
    elif what == "debug":
        pass  # schroot's debugging output: nothing to add
    elif value is None:
        setattr(opts, what, True)
    else:
        setattr(opts, what, value)


def parse(argv: Sequence[str]) -> Options:
    """Parse a schroot 1.6 command line.

    Like schroot, options may appear anywhere before ``--``; the other words
    form the command. Short options may be grouped (``-qp``) and take their
    value attached or as the next word; long options take ``=VALUE`` or the
    next word and may be abbreviated.
    """
    opts = Options()
    i, n = 0, len(argv)
    while i < n:
        arg = argv[i]
        i += 1
        if arg == "--":
            opts.command.extend(argv[i:])
            break
        if arg.startswith("--"):
            name, eq, attached = arg[2:].partition("=")
            option = _long_option(name)
            takes = _LONG[option][0]
            if takes:
                if eq:
                    value = attached
                elif i < n:
                    value = argv[i]
                    i += 1
                else:
                    raise UsageError(f"option '--{option}' needs a value")
                _apply(opts, option, value)
            else:
                if eq:
                    raise UsageError(f"option '--{option}' takes no value")
                _apply(opts, option, None)
        elif arg.startswith("-") and arg != "-":
            j = 1
            while j < len(arg):
                letter = arg[j]
                j += 1
                option = _SHORT.get(letter, "")
                if not option:
                    raise UsageError(f"unrecognised option '-{letter}'")
                if _LONG[option][0]:
                    if j < len(arg):
                        value = arg[j:]
                    elif i < n:
                        value = argv[i]
                        i += 1
                    else:
                        raise UsageError(f"option '-{letter}' needs a value")
                    _apply(opts, option, value)
                    break
                _apply(opts, option, None)
        else:
            opts.command.append(arg)
    return opts


# --- names ---------------------------------------------------------------------------


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


def split_name(given: str, default: str) -> tuple[str, str]:
    namespace, sep, name = given.partition(":")
    if not sep:
        return default, given
    return namespace, name


def _not_found(given: str) -> Exception:
    from core.errors import NotFound

    return NotFound(f"{given}: chroot not found")


def resolve(eng: Engine, given: str, default: str = "chroot") -> Target:
    """Look *given* up in its namespace (or *default*), as schroot does."""
    from core.errors import NotFound
    from core.names import is_valid_name

    namespace, name = split_name(given, default)
    if namespace not in NAMESPACES or not is_valid_name(name):
        raise _not_found(given)
    if namespace == "session":
        try:
            session = eng.session_info(name, details=False).session
        except NotFound:
            raise _not_found(given) from None
        return Target("session", given, name, image=session.image, session=session)
    try:
        image = eng.resolve_image(name)
    except NotFound:
        from .schroot_isolation import resolve_sbuild_name

        derived = resolve_sbuild_name(eng, name)  # SUITE-ARCH-sbuild: the name sbuild --arch looks for
        if derived is not None:
            return Target(namespace, given, derived, image=derived)
        # schroot's compatibility names: chroot:ALIAS-source is source:ALIAS
        if namespace == "chroot" and name.endswith("-source") and len(name) > 7:
            try:
                return Target("source", given, name[:-7], image=eng.resolve_image(name[:-7]))
            except NotFound:
                derived = resolve_sbuild_name(eng, name[:-7])
                if derived is not None:
                    return Target("source", given, derived, image=derived)
        raise _not_found(given) from None
    return Target(namespace, given, name, image=image)


def _level(eng: Engine, config: ImageConfig) -> str:
    from core import access

    a = eng.actor
    lists = {
        "users": config.users,
        "groups": config.groups,
        "root_users": config.root_users,
        "root_groups": config.root_groups,
    }
    return access.level(a.user, a.uid, a.groups, lists)


def _visible_session(eng: Engine, session: Session) -> bool:
    from core import access

    a = eng.actor
    return session.uid == a.uid or access.level(a.user, a.uid, a.groups, session.access) == "root"


class Catalogue:
    """Every image and session the caller may see, read once per command."""

    def __init__(self, configs: dict[str, ImageConfig], sessions: list[Session], levels: dict[str, str]) -> None:
        self.configs = configs
        self.sessions = sessions
        self.levels = levels

    @classmethod
    def load(cls, eng: Engine, *, with_sessions: bool) -> Catalogue:
        from core import images
        from core.errors import RoostError

        configs: dict[str, ImageConfig] = {}
        levels: dict[str, str] = {}
        for name in eng.store.image_names():
            try:
                config = images.load_config(eng, name)
            except RoostError:
                continue  # removed while we listed, or unreadable: `roost image list` says why
            level = _level(eng, config)
            if level != "none":
                configs[name] = config
                levels[name] = level
        sessions = []
        if with_sessions:
            sessions = [i.session for i in eng.list_sessions() if _visible_session(eng, i.session)]
        return cls(configs, sessions, levels)

    def names(self, opts: Options) -> list[str]:
        """Fully qualified names, as ``schroot -l`` prints them (sorted)."""
        from .schroot_isolation import aliases as door_aliases

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


# --- info ----------------------------------------------------------------------------

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


def _chroot_rows(
    name: str, config: ImageConfig, *, source: bool, generation: int | None, aliases: tuple[str, ...] = ()
) -> Rows:
    from .schroot_isolation import info_rows

    description = config.description or name
    rows: Rows = [
        ("Name", name),
        ("Description", f"{description} (source chroot)" if source else description),
        ("Type", f"roost-{config.backend}"),
        ("Users", _words(config.root_users if source else config.users)),
        ("Groups", _words(config.root_groups if source else config.groups)),
        ("Root Users", _words(config.root_users)),
        ("Root Groups", _words(config.root_groups)),
        ("Aliases", _words(aliases or config.aliases)),
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
    rows += info_rows(config, network=None, architecture=None)
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
    from .schroot_isolation import info_rows

    rows += info_rows(None, network=session.network, architecture=session.architecture)
    return rows


def info_text(eng: Engine, targets: Sequence[Target]) -> str:
    from core import generations, images
    from core.errors import RoostError

    blocks = []
    for t in targets:
        if t.namespace == "session":
            assert t.session is not None
            try:
                description = images.load_config(eng, t.session.image).description
            except RoostError:
                description = ""
            blocks.append(format_section("Session", _session_rows(t.session, description)))
            continue
        assert t.image is not None
        config = images.require(eng, t.image)
        try:
            current: int | None = generations.current(eng.store, t.image)
        except RoostError:
            current = None
        source = t.namespace == "source"
        from .schroot_isolation import aliases

        names = aliases(t.image, config, {n: images.load_config(eng, n) for n in eng.store.image_names()})
        rows = _chroot_rows(t.image, config, source=source, generation=current, aliases=names)
        blocks.append(format_section("Source" if source else "Chroot", rows))
    return "\n".join(blocks)


# --- running -------------------------------------------------------------------------


def filtered_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The caller's environment minus schroot's ``environment-filter``."""
    return {k: v for k, v in environ.items() if k not in FILTERED_NAMES and not k.startswith(FILTERED_PREFIXES)}


def _caller_cwd() -> str:
    try:
        return os.getcwd()
    except OSError:
        return "/"


def schroot_environment(
    uid: int, user: str, image: str, alias: str | None, sid: str, command: Sequence[str]
) -> dict[str, str]:
    """The ``SCHROOT_*`` variables schroot sets inside; USER/GROUP/UID/GID name the caller."""
    import grp
    import pwd

    try:
        gid = pwd.getpwuid(uid).pw_gid
    except KeyError:
        gid = uid
    try:
        group = grp.getgrgid(gid).gr_name
    except KeyError:
        group = str(gid)
    return {
        "SCHROOT_COMMAND": " ".join(command),
        "SCHROOT_USER": user,
        "SCHROOT_GROUP": group,
        "SCHROOT_UID": str(uid),
        "SCHROOT_GID": str(gid),
        "SCHROOT_CHROOT_NAME": image,
        "SCHROOT_ALIAS_NAME": alias or image,
        "SCHROOT_SESSION_ID": sid,
    }


def adjust_launch(
    launch: Launch,
    opts: Options,
    env_in: Mapping[str, str],
    cwd: str,
    schroot_env: Callable[[list[str]], dict[str, str]],
) -> None:
    """Turn roost's launch of a command (or login shell) into schroot's.

    With ``-p``, schroot keeps the caller's HOME, LOGNAME, USER, SHELL and
    PATH (filling in only what is missing), except that PATH is always the
    standard one when the command runs as root; without ``-p`` they are the
    target user's and PATH is the standard one for root or for other users.
    """
    if opts.preserve:
        for key in ("HOME", "LOGNAME", "USER", "SHELL"):
            if key in env_in:
                launch.env[key] = env_in[key]
        launch.env["PATH"] = ROOT_PATH if launch.uid == 0 else env_in.get("PATH", USER_PATH)
    else:
        launch.env["PATH"] = ROOT_PATH if launch.uid == 0 else USER_PATH
    if not opts.command:
        # schroot's choice: -s, else $SHELL (with -p), the user's shell, /bin/bash, /bin/sh, the
        # first that exists in the session (a hint only: exec resolves it inside)
        candidates = [env_in.get("SHELL", "") if opts.preserve else "", launch.program, "/bin/bash", "/bin/sh"]
        shell = opts.shell or next(
            (c for c in candidates if c.startswith("/") and os.path.exists(launch.root + c)), "/bin/sh"
        )
        launch.program = shell
        launch.env["SHELL"] = shell
        # with -p the shell is not a login shell, so it does not reset the preserved environment
        launch.argv = [shell] if opts.preserve else ["-" + os.path.basename(shell)]
        if opts.directory is None:
            # a login shell: the caller's directory, then $HOME (with -p), the home directory, /
            fallbacks = [env_in["HOME"]] if opts.preserve and env_in.get("HOME", "").startswith("/") else []
            fallbacks += [launch.cwd, "/"]
            launch.cwd = cwd
            launch.cwd_fallbacks = tuple(dict.fromkeys(f for f in fallbacks if f != cwd))
    if "TERM" not in env_in:
        launch.env.pop("TERM", None)
    launch.env.update(schroot_env(opts.command or launch.argv[:1]))
    launch.failure_code = EXIT_FAILURE


def prepare_launch(eng: Engine, session: Session, opts: Options, environ: Mapping[str, str]) -> Launch:
    """Resolve how to run ``opts.command`` (or a login shell) in *session*, schroot's way."""
    cwd = _caller_cwd()
    env_in = filtered_environment(environ)
    launch: Launch = eng.launch(
        session.id,
        list(opts.command) or None,
        user=opts.user,
        directory=opts.directory,
        preserve_env=opts.preserve,
        environ=env_in,
        caller_cwd=cwd,
    )
    a = eng.actor
    adjust_launch(
        launch,
        opts,
        env_in,
        cwd,
        lambda command: schroot_environment(a.uid, a.user, session.image, session.alias, session.id, command),
    )
    return launch


def _start(launch: Launch) -> int:
    """Fork a child that execs *launch*; return its pid once it has exec'd (or died trying)."""
    from core import process

    started_r, started_w = os.pipe()  # close-on-exec: EOF once the child exec'd or died
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child never returns
        try:
            os.close(started_r)
            process.exec_launch(launch)
        except BaseException as e:  # noqa: BLE001 - the child must never return into the caller
            try:
                os.write(2, f"{PROG}: {e}\n".encode(errors="replace"))
            finally:
                os._exit(EXIT_FAILURE)
    os.close(started_w)
    try:
        while os.read(started_r, 64):
            pass
    finally:
        os.close(started_r)
    return pid


def _wait(pid: int, *, unblock: bool = False) -> int:
    """Wait for *pid*, relaying signals to it (see :func:`process.wait_relaying`).

    A command killed by a signal makes the status 1, as with schroot.
    """
    from core import process

    status = process.wait_relaying(pid, unblock=unblock)
    if os.WIFSIGNALED(status):
        import signal

        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        print(f"{PROG}: the command was terminated by {name}", file=sys.stderr)
        return EXIT_FAILURE
    return os.waitstatus_to_exitcode(status)


def run_launch(eng: Engine, sid: str, launch: Launch, *, unblock: bool = False) -> int:
    """Run *launch* in session *sid* and wait for it; returns its status as schroot reports it.

    The session's lock is held shared until the child has exec'd, so ``end``
    cannot unmount underneath a starting command.
    """
    from core.errors import Conflict

    lock = eng.lock(eng.store.session_lock_name(sid), "run", exclusive=False)
    try:
        if eng.session_info(sid, details=False).state != "mounted":
            raise Conflict(f"session {sid} ended or changed while the command was starting")
        pid = _start(launch)
    finally:
        lock.release()
    return _wait(pid, unblock=unblock)


def _describe(command: Sequence[str]) -> str:
    import shlex

    shown = shlex.join(command)
    return shown if len(shown) <= 200 else shown[:199] + "…"


def failure_reason(command: Sequence[str], code: int) -> str:
    return f"{_describe(command) if command else 'the login shell'} exited {code}"


def run_fast(opts: Options, root: str | None, environ: Mapping[str, str]) -> int | None:
    """``-r`` in one mounted session without the engine; None when the full path must decide.

    Reads the session's record with the C JSON scanner, checks access, takes
    the session's lock shared until the command has exec'd, and waits for it.
    Anything unusual (an error to report, a session that needs recovery, a busy
    lock) returns None before anything was done, and the engine handles it
    with its proper messages.
    """
    if os.geteuid() != 0 or len(opts.chroots) != 1 or opts.selects_all or opts.options:
        return None
    namespace, sid = split_name(opts.chroots[0], "session")
    from core import process
    from core.actor import Actor
    from core.errors import RoostError

    from .fastpath import live_session, may_run, shared_session_lock

    if namespace != "session":
        return None
    found = live_session(root, sid)
    if found is None:
        return None
    conf, record = found
    wanted = environ.get("ROOST_NETWORK")  # sbuild's build command asks for its network (schroot_isolation)
    if wanted and wanted != record.get("network", "host"):
        return None
    image = record.get("image")
    alias = record.get("alias")
    if not isinstance(image, str) or not isinstance(alias, str | None):
        return None
    actor = Actor.current(environ)  # type: ignore[arg-type]
    cwd = _caller_cwd()
    env_in = filtered_environment(environ)
    try:
        target = may_run(actor, record, sid, opts.user)
        launch = process.prepare(
            record,
            list(opts.command) or None,
            user=target,
            directory=opts.directory,
            preserve_env=opts.preserve,
            environ=env_in,
            caller_cwd=cwd,
        )
    except (RoostError, TypeError, ValueError):
        return None
    adjust_launch(
        launch,
        opts,
        env_in,
        cwd,
        lambda command: schroot_environment(actor.uid, actor.user, image, alias, sid, command),
    )
    lock = shared_session_lock(conf.run_root, sid)
    if lock is None:
        return None
    try:
        pid = _start(launch)
    finally:
        os.close(lock)
    code = _wait(pid)
    if code != 0 and record.get("kind") == "maintenance":
        from core.engine import Engine

        Engine(conf, actor=actor).mark_failed(sid, failure_reason(opts.command, code))
    return code


# --- actions -------------------------------------------------------------------------


class FrontDoor:
    """One invocation: parsed options, the engine, and where output goes."""

    def __init__(self, opts: Options, eng: Engine, environ: Mapping[str, str]) -> None:
        self.opts = opts
        self.eng = eng
        self.environ = environ

    def say(self, message: str) -> None:
        if self.opts.verbose:
            print(f"{PROG}: {message}", file=sys.stderr, flush=True)

    # selection

    def _default_all(self, *, sessions: bool) -> None:
        o = self.opts
        if not o.chroots and not o.selects_all:
            o.all_chroots = o.all_sources = True
            o.all_sessions = sessions

    def targets(self, default: str = "chroot") -> list[Target]:
        o = self.opts
        if o.chroots and o.selects_all:
            raise UsageError("--chroot and --all… select chroots two ways: use one")
        if o.chroots:
            return [resolve(self.eng, c, default) for c in o.chroots]
        catalogue = Catalogue.load(self.eng, with_sessions=o.all_sessions)
        return catalogue.targets(o)

    def one_target(self, default: str) -> Target:
        targets = self.targets(default)
        if len(targets) != 1:
            raise UsageError("this action needs exactly one chroot (-c NAME)")
        return targets[0]

    # listing

    def do_list(self) -> int:
        o = self.opts
        if o.chroots and o.selects_all:
            raise UsageError("--chroot and --all… select chroots two ways: use one")
        if o.chroots:
            for c in o.chroots:
                resolve(self.eng, c)  # every name must exist before anything is printed
            sys.stdout.write("".join(f"{c}\n" for c in o.chroots))
            return 0
        self._default_all(sessions=False)
        catalogue = Catalogue.load(self.eng, with_sessions=o.all_sessions)
        sys.stdout.write("".join(f"{n}\n" for n in catalogue.names(o)))
        return 0

    def do_info(self) -> int:
        self._default_all(sessions=False)
        sys.stdout.write(info_text(self.eng, self.targets()))
        return 0

    def do_location(self) -> int:
        self._default_all(sessions=False)
        lines = []
        for t in self.targets():
            # an image has no single tree to point at: like schroot's session-only chroots,
            # it has a location only once a session is mounted
            lines.append(t.session.mountpoint if t.session is not None else "")
        sys.stdout.write("".join(f"{line}\n" for line in lines))
        return 0

    # sessions

    def _begin(self, target: Target, *, auto: bool) -> Session:
        from core.errors import BadInput

        if target.namespace == "session":
            raise BadInput(f"{target.given}: a session cannot begin another session (use -r)")
        assert target.image is not None
        alias = target.name if target.name != target.image else None
        from .schroot_isolation import network_option

        session = self.eng.begin(
            target.image,
            name=None if auto else self.opts.session_name,
            maintenance=target.namespace == "source",
            auto=auto,
            alias=alias,
            network=network_option(self.opts.options),
        )
        self.say(f"began {session.kind} session {session.id} of {session.image} (generation {session.generation})")
        return session

    def do_begin(self) -> int:
        if self.opts.command:
            raise UsageError("--begin-session takes no command")
        target = self.one_target("chroot")
        session = self._begin(target, auto=False)
        print(session.id, flush=True)
        return 0

    def _sessions(self) -> list[Target]:
        if self.opts.selects_all:
            raise UsageError("this action works on sessions named with -c")
        targets = self.targets("session")
        if not targets:
            raise UsageError("no session given (-c SESSION)")
        for t in targets:
            if t.session is None:
                raise _not_found(t.given)
        return targets

    def run_in(self, session: Session, *, unblock: bool = False) -> int:
        from .schroot_isolation import requested_network

        wanted = requested_network(self.opts.options, self.environ)
        if wanted is not None and wanted != session.network:
            old, _ = self.eng.set_network(session.id, wanted)
            self.say(f"session {session.id}: network {old} -> {wanted}")
        launch = prepare_launch(self.eng, session, self.opts, self.environ)
        code = run_launch(self.eng, session.id, launch, unblock=unblock)
        if code != 0 and session.maintenance:
            self.eng.mark_failed(session.id, failure_reason(self.opts.command, code))
        return code

    def do_run(self) -> int:
        code = 0
        for t in self._sessions():
            assert t.session is not None
            status = self.run_in(t.session)
            code = code or status
        return code

    def finish(self, session: Session, *, force: bool, message: str | None = None) -> int:
        """End *session*: an ordinary one is thrown away, a source session promoted unless it failed."""
        eng = self.eng
        if not session.maintenance:
            eng.end(session.id, force=force)
            self.say(f"ended session {session.id}")
            return 0
        current = eng.session_info(session.id, details=False).session
        if current.failed:
            eng.end(session.id, force=True)
            print(
                f"{PROG}: source session {session.id} not promoted ({current.failed}); "
                f"{session.image} stays at generation {session.generation}",
                file=sys.stderr,
                flush=True,
            )
            return EXIT_FAILURE
        shown = current.alias or current.image
        number = eng.promote(session.id, message or f"schroot source:{shown} session {session.id}")
        self.say(f"promoted source session {session.id}: {session.image} is at generation {number}")
        return 0

    def do_end(self) -> int:
        if self.opts.command:
            raise UsageError("--end-session takes no command")
        code = 0
        for t in self._sessions():
            assert t.session is not None
            code = self.finish(t.session, force=self.opts.force) or code
        return code

    def do_recover(self) -> int:
        for t in self._sessions():
            for line in self.eng.recover(t.name):
                self.say(line)
        return 0

    def do_automatic(self) -> int:
        """Begin, run, end (or promote) in every selected chroot, in turn."""
        import _signal  # type: ignore[import-not-found]

        from core import process

        o = self.opts
        if o.session_name:
            raise UsageError("--session-name goes with --begin-session")
        if not o.chroots and not o.selects_all:
            o.chroots = ["default"]  # schroot's fallback name
        code = 0
        for target in self.targets("chroot"):
            if target.session is not None:
                status = self.run_in(target.session)
            else:
                relayed = process.relayed_signals()
                # Signals that arrive while the session is set up or torn down wait until
                # the command runs (and are then relayed to it): the session always ends.
                _signal.pthread_sigmask(_signal.SIG_BLOCK, relayed)
                try:
                    session = self._begin(target, auto=True)
                    try:
                        status = self.run_in(session, unblock=True)
                    except BaseException:
                        self.eng.end(session.id, force=True)
                        raise
                    what = f"-- {_describe(o.command)}" if o.command else "(a login shell)"
                    ended = self.finish(session, force=True, message=f"schroot -c {target.given} {what}")
                    status = status or ended
                finally:
                    _signal.pthread_sigmask(_signal.SIG_UNBLOCK, relayed)
            code = code or status
        return code

    def do_config(self) -> int:
        from core.errors import BadInput

        raise BadInput("--config is not available: roost images are configured in image.yaml (roost image info NAME)")

    def dispatch(self) -> int:
        o = self.opts
        if o.options:
            from .schroot_isolation import network_option

            network_option(o.options)  # only network=… is accepted; anything else is refused here
        action = o.action or "automatic"
        if action not in ("automatic", "run") and o.command:
            raise UsageError(f"unexpected command {o.command[0]!r} for {ACTIONS[action]}")
        handlers: dict[str, Callable[[], int]] = {
            "list": self.do_list,
            "info": self.do_info,
            "config": self.do_config,
            "location": self.do_location,
            "automatic": self.do_automatic,
            "begin": self.do_begin,
            "recover": self.do_recover,
            "run": self.do_run,
            "end": self.do_end,
        }
        return handlers[action]()


HELP = """\
Usage:
  {prog} [OPTION…] [--] [COMMAND] — run a command in a chroot (schroot 1.6 command line)

Actions:
  -h, --help                 Show help options
  -V, --version              Print version information
  -l, --list                 List available chroots
  -i, --info                 Show information about selected chroots
  --location                 Print location of selected chroots
  --automatic-session        Begin, run and end a session automatically (default)
  -b, --begin-session        Begin a session; print its id
  --recover-session          Recover an existing session
  -r, --run-session          Run an existing session
  -e, --end-session          End an existing session (a source: session is promoted)

General options:
  -q, --quiet                Show less output
  -v, --verbose              Show more output

Chroot selection:
  -c, --chroot=chroot        Use specified chroot (chroot:NAME, source:NAME, session:ID)
  -a, --all                  Select all chroots, source chroots and sessions
  --all-chroots              Select all chroots
  --all-source-chroots       Select all source chroots
  --all-sessions             Select all active sessions
  --exclude-aliases          Do not include aliases

Chroot environment:
  -d, --directory=directory  Directory to use
  -u, --user=user            Username (default current user)
  -p, --preserve-environment Preserve user environment
  -s, --shell=shell          Shell to use as login shell

Session actions:
  -n, --session-name=name    Session name (with --begin-session)
  -f, --force                Force operation, even if it fails

chroot:NAME is a roost image (or an alias), source:NAME a maintenance session of it
that is promoted into the image's next generation when it ends successfully.
"""


def request(argv: Sequence[str]) -> tuple[str | None, list[str]] | None:
    """(state root, arguments) when *argv* is ``roost [--headless] [--root DIR] schroot …``."""
    root = None
    i, n = 0, len(argv)
    while i < n:
        arg = argv[i]
        if arg == "--headless":
            i += 1
        elif arg == "--root" and i + 1 < n:
            root = argv[i + 1]
            i += 2
        elif arg.startswith("--root="):
            root = arg[7:]
            i += 1
        else:
            break
    if i < n and argv[i] == "schroot":
        return root, list(argv[i + 1 :])
    return None


def main(argv: Sequence[str] | None = None, *, root: str | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    prog = os.path.basename(sys.argv[0]) if argv is None else f"{PROG} schroot"
    try:
        opts = parse(args)
    except UsageError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return EXIT_FAILURE
    if opts.action == "help":
        sys.stdout.write(HELP.format(prog=prog))
        return 0
    if opts.action == "version":
        print(f"{prog} (roost {__version__}): the schroot {SCHROOT_VERSION} command line, on roost")
        return 0
    if opts.action == "run":
        code = run_fast(opts, root, os.environ)
        if code is not None:
            return code
    from core.errors import RoostError

    try:
        from core.engine import Engine

        def waiting(message: str) -> None:
            if not opts.quiet:
                print(f"{PROG}: {message}", file=sys.stderr, flush=True)

        eng = Engine(root=root, on_wait=waiting)
        return FrontDoor(opts, eng, os.environ).dispatch()
    except UsageError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return EXIT_FAILURE
    except RoostError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_FAILURE
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
