"""Running a command, or a login shell, inside a mounted session.

This module sits on the hot path of ``roost session run`` and imports only
what a chroot needs (``os``, ``pwd``, ``_signal``): no ``json``, no
``subprocess``, no ``signal`` (which drags in ``enum``), no ``typing``.

A command is launched in two halves: :func:`prepare` (in the caller, may
raise :class:`RoostError`) resolves the user, the directory and the
environment; :func:`exec_launch` chroots, drops privileges and execs, and
is either the last thing ``session run`` does (no fork at all) or the first
thing a forked child does (:func:`spawn`).
"""

from __future__ import annotations

import os
import pwd

from .errors import BadInput, NotFound, SystemFailure

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any, NoReturn

ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
USER_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/games"
PERSONALITIES = {"linux": 0x0000, "linux32": 0x0008, "linux64": 0x0000}


class Launch:
    """Everything :func:`exec_launch` needs, resolved before the chroot.

    *program* is looked up in the session's PATH; *argv* is what it sees
    (``argv[0]`` is ``-bash`` for a login shell).
    """

    __slots__ = (
        "argv",
        "cgroups",
        "cwd",
        "cwd_fallbacks",
        "env",
        "failure_code",
        "gid",
        "groups",
        "netns",
        "personality",
        "program",
        "root",
        "uid",
    )

    def __init__(
        self,
        root: str,
        program: str,
        argv: list[str],
        uid: int,
        gid: int,
        groups: list[int],
        cwd: str,
        cwd_fallbacks: tuple[str, ...],
        env: dict[str, str],
        personality: str | None,
    ) -> None:
        self.root = root
        self.program = program
        self.argv = argv
        self.uid = uid
        self.gid = gid
        self.groups = groups
        self.cwd = cwd
        self.cwd_fallbacks = cwd_fallbacks
        self.env = env
        self.personality = personality
        #: Exit code for every failure before the exec (None: 2, 126 or 127 as a shell would).
        self.failure_code: int | None = None
        #: cgroup directories to join, and the network namespace file to join (core.isolation).
        self.cgroups: list[str] = []
        self.netns: str | None = None


def resolve_user(user: str | None, default_uid: int) -> pwd.struct_passwd:
    """The host passwd entry for *user* (a name or a number), or for *default_uid*."""
    try:
        if user is None:
            return pwd.getpwuid(default_uid)
        if user.isdigit():
            return pwd.getpwuid(int(user))
        return pwd.getpwnam(user)
    except (KeyError, ValueError):
        shown = user if user is not None else f"uid {default_uid}"
        raise NotFound(f"no user {shown!r} on this host") from None


def prepare(
    record: Mapping[str, Any],
    argv: Sequence[str] | None,
    *,
    user: pwd.struct_passwd,
    directory: str | None = None,
    preserve_env: bool = False,
    environ: Mapping[str, str] | None = None,
    caller_cwd: str | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> Launch:
    """Resolve how to run *argv* (or a login shell when *argv* is None) in *record*."""
    env_in = os.environ if environ is None else environ
    root = record["mountpoint"]
    login = argv is None
    shell = user.pw_shell or "/bin/sh"
    if not os.path.exists(root + shell):  # a hint only; exec resolves it inside the chroot
        shell = "/bin/sh"
    if login:
        program, exec_argv = shell, ["-" + os.path.basename(shell)]
    else:
        if not argv:
            raise BadInput("no command given (put it after --)")
        exec_argv = [*(record.get("command_prefix") or ()), *argv]
        program = exec_argv[0]
    env: dict[str, str] = dict(env_in) if preserve_env else {}
    env.update(
        HOME=user.pw_dir or "/",
        LOGNAME=user.pw_name,
        USER=user.pw_name,
        SHELL=shell,
    )
    if not preserve_env or "PATH" not in env:
        env["PATH"] = ROOT_PATH if user.pw_uid == 0 else USER_PATH
    env["TERM"] = env_in.get("TERM", "dumb")
    for name in record.get("env_keep") or ():
        if name in env_in:
            env[name] = env_in[name]
    for name, value in record.get("env_set") or ():
        env[name] = value
    env["ROOST_SESSION_ID"] = record["id"]
    env["ROOST_IMAGE"] = record["image"]
    if extra_env:
        env.update(extra_env)
    fallbacks: tuple[str, ...]
    if directory is not None:
        if not directory.startswith("/"):
            raise BadInput(f"directory {directory!r} must be an absolute path")
        cwd, fallbacks = directory, ()
    elif login:
        cwd, fallbacks = env["HOME"], ("/",)
    else:
        cwd = caller_cwd if caller_cwd is not None else _caller_cwd()
        fallbacks = ()
    try:
        groups = os.getgrouplist(user.pw_name, user.pw_gid)
    except OSError:
        groups = [user.pw_gid]
    launch = Launch(
        root=root,
        program=program,
        argv=exec_argv,
        uid=user.pw_uid,
        gid=user.pw_gid,
        groups=groups,
        cwd=cwd,
        cwd_fallbacks=fallbacks,
        env=env,
        personality=record.get("personality"),
    )
    # Isolation (core.isolation): the session's cgroups, the loopback filter's leaf in place of
    # its parent (one write per hierarchy), and the network namespace of network: none.
    cgroups = list(record.get("cgroups") or ())
    filtered = record.get("filtered")
    if filtered:
        parent = filtered.rsplit("/", 1)[0]
        cgroups = [d for d in cgroups if d != parent] + [filtered]
    launch.cgroups = cgroups
    launch.netns = record.get("netns")
    return launch


def _caller_cwd() -> str:
    try:
        return os.getcwd()
    except OSError:
        return "/"


def _restore_signals() -> None:
    # Python ignores SIGPIPE and SIGXFSZ; a command must start with the defaults.
    import _signal  # type: ignore[import-not-found]

    for name in ("SIGPIPE", "SIGXFSZ", "SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT"):
        number = getattr(_signal, name, None)
        if number is not None:
            _signal.signal(number, _signal.SIG_DFL)
    _signal.pthread_sigmask(_signal.SIG_SETMASK, [])  # a caller may have blocked some


def _set_personality(name: str) -> None:
    import ctypes

    value = PERSONALITIES.get(name)
    if value:
        ctypes.CDLL(None, use_errno=True).personality(value)


def _fail(message: str, code: int) -> NoReturn:
    os.write(2, f"roost: {message}\n".encode(errors="replace"))
    os._exit(code)


def _cgroup_file(directory: str) -> int:
    """*directory*'s ``tasks`` (v1) or ``cgroup.procs`` (v2), opened for writing: "0" there moves the writer.

    The caller goes into a v1 directory through its ``tasks`` file, as the
    thread it is: it must have no other threads (a forked child, or
    ``session run`` before it execs). Writing ``cgroup.procs`` would move a
    whole thread group, which waits for an RCU grace period
    (:func:`core.cgroups.plan`); v2 has only that. The kernel checks the
    opener's credentials, so a parent may open and its child write.
    """
    try:
        return os.open(directory + "/tasks", os.O_WRONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return os.open(directory + "/cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)


def join_cgroups(directories: Sequence[str], pid: int = 0) -> None:
    """Put the calling process (or *pid*) into every cgroup directory: one write each.

    Here rather than in :mod:`core.cgroups`, which a ``session run`` need not
    load. Without *pid*, the caller must have one thread (:func:`_cgroup_file`).
    """
    for directory in directories:
        fd = os.open(directory + "/cgroup.procs", os.O_WRONLY | os.O_CLOEXEC) if pid else _cgroup_file(directory)
        try:
            os.write(fd, str(pid).encode() if pid else b"0")
        finally:
            os.close(fd)


class _Isolation:
    """What a launch joins, opened ahead: the cgroup files, and the network namespace the caller is in.

    :func:`start` opens them in the parent before it forks: the child then
    writes one "0" per cgroup and is born in the session's network namespace
    (the parent's thread enters it around the fork and goes back), where
    opening, writing and ``setns`` in a freshly forked child cost more (the
    child copies every page the interpreter touches). A file that cannot be
    opened is an error of the parent, before anything is started.
    """

    __slots__ = ("fds", "home")

    def __init__(self, launch: Launch) -> None:
        self.fds: list[int] = []
        self.home = -1
        try:
            for directory in launch.cgroups:
                try:
                    self.fds.append(_cgroup_file(directory))
                except OSError as e:
                    raise SystemFailure(
                        f"cannot join the session's cgroup {directory}: {e.strerror} (roost session recover)"
                    ) from None
            if launch.netns:
                from .netns import enter

                try:
                    self.home = enter(launch.netns)
                except OSError as e:
                    raise SystemFailure(
                        f"cannot join the session's network namespace: {e.strerror} (roost session recover)"
                    ) from None
        except BaseException:
            self.close()
            raise

    def join(self, code: int | None) -> None:
        """In the child: into every cgroup (the network namespace came with the fork)."""
        for fd in self.fds:
            try:
                os.write(fd, b"0")
            except OSError as e:
                _fail(f"cannot join the session's cgroups: {e.strerror} (roost session recover)", code or 5)

    def close(self) -> None:
        """In the parent, once it forked: its thread back in its own network namespace; the files closed."""
        for fd in self.fds:
            os.close(fd)
        self.fds = []
        if self.home >= 0:
            from .netns import leave

            leave(self.home)
            self.home = -1


def _isolate(launch: Launch, code: int | None) -> None:
    """Join the session's cgroups (one write each) and network namespace (one setns)."""
    try:
        isolation = _Isolation(launch)
    except SystemFailure as e:
        _fail(str(e), code or 5)
    isolation.join(code)
    for fd in isolation.fds:
        os.close(fd)
    if isolation.home >= 0:
        os.close(isolation.home)  # this process stays in the session's namespace: it execs there


def exec_launch(launch: Launch, isolation: _Isolation | None = None) -> None:
    """chroot into the session, become the user, change directory and exec. Never returns.

    Failures after the chroot cannot raise to the caller any more: they print
    one line and exit with 2 (a directory that does not exist in the session),
    126 (not executable) or 127 (not found), like a shell, or with
    ``launch.failure_code`` when that is set.
    """
    code = launch.failure_code
    if isolation is not None:
        isolation.join(code)  # start opened the files and brought the network namespace
    elif launch.cgroups or launch.netns:
        _isolate(launch, code)
    # Nothing below the chroot may import a module: the host's Python is gone.
    if launch.personality:
        _set_personality(launch.personality)
    os.chroot(launch.root)
    os.chdir("/")
    if os.getuid() != launch.uid or os.getgid() != launch.gid or os.geteuid() != launch.uid:
        os.setgroups(launch.groups)
        os.setgid(launch.gid)
        os.setuid(launch.uid)
    for candidate in (launch.cwd, *launch.cwd_fallbacks):
        try:
            os.chdir(candidate)
            break
        except OSError as e:
            cd_error = e
    else:
        _fail(
            f"cannot change to directory {launch.cwd!r} in the session: {cd_error.strerror} (use -d to choose another)",
            code or 2,
        )
    _restore_signals()
    program = launch.program
    error: OSError = FileNotFoundError(2, "No such file or directory")
    if "/" in program:
        candidates = [program]
    else:  # os.execvpe would import modules that no longer exist after the chroot
        candidates = [f"{d or '.'}/{program}" for d in launch.env.get("PATH", ROOT_PATH).split(":")]
    for candidate in candidates:
        try:
            os.execve(candidate, launch.argv, launch.env)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as e:
            error = e  # remember EACCES and the like, but keep searching like a shell
    if isinstance(error, FileNotFoundError):
        _fail(f"{program}: command not found in the session", code or 127)
    _fail(f"{program}: {error.strerror}", code or 126)


def start(launch: Launch, *, stdin: int = 0, stdout: int = 1, stderr: int = 2, foreground: int | None = None) -> int:
    """Fork a child that runs *launch*; return its pid once the child has exec'd (or died trying).

    The parent waits for the end of a close-on-exec pipe, so whatever it holds
    for the start (the session's lock, shared) can be released as soon as this
    returns. With *foreground* (a terminal's descriptor), the child becomes a
    process group of its own and the terminal's foreground group, as a shell
    starts a job: see :func:`wait_foreground`. Wait for the pid with
    os.waitpid (or :func:`wait_relaying`).
    """
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    isolation = _Isolation(launch) if launch.cgroups or launch.netns else None
    pid = -1
    try:
        started_r, started_w = os.pipe()  # close-on-exec: EOF once the child exec'd or died
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child never returns

            def run() -> None:
                os.close(started_r)
                exec_launch(launch, isolation)

            run_child(launch, run, stdin, stdout, stderr, foreground)
    finally:
        if isolation is not None and pid != 0:
            isolation.close()  # the parent's thread back in its namespace, whatever interrupted it
    os.close(started_w)
    try:
        while os.read(started_r, 64):
            pass
    finally:
        os.close(started_r)
    if foreground is not None:
        # Both sides set the group, as shells do: whichever runs first wins the race.
        try:
            os.setpgid(pid, pid)
            os.tcsetpgrp(foreground, pid)
        except OSError:
            pass
    return pid


def run_child(
    launch: Launch, run: Callable[[], object], stdin: int, stdout: int, stderr: int, foreground: int | None
) -> NoReturn:
    """A forked child's start: the terminal's foreground job if *foreground*, its descriptors, then *run*.

    *run* execs (or joins what execs); the child never returns into the
    caller: a failure prints one line and exits with the launch's code.
    """
    try:
        if foreground is not None:
            _become_foreground(foreground)
        for target, fd in ((0, stdin), (1, stdout), (2, stderr)):
            if fd != target:
                os.dup2(fd, target)
        run()
    except BaseException as e:  # noqa: BLE001 - the child must never return into the caller
        try:
            os.write(2, f"roost: {e}\n".encode(errors="replace"))
        finally:
            os._exit(launch.failure_code or 127)
    os._exit(launch.failure_code or 127)


def _become_foreground(tty: int) -> None:
    """In a child: a process group of its own, in the foreground of *tty* (SIGTTOU ignored meanwhile)."""
    import _signal

    old = _signal.signal(_signal.SIGTTOU, _signal.SIG_IGN)
    try:
        os.setpgid(0, 0)
        os.tcsetpgrp(tty, os.getpid())
    except OSError:
        pass
    finally:
        _signal.signal(_signal.SIGTTOU, old)


def terminal(stdin: int = 0) -> int | None:
    """*stdin* if it is a terminal whose foreground a job can be given, else None."""
    return stdin if os.isatty(stdin) else None


def wait_foreground(pid: int, tty: int | None) -> int:
    """Wait for a job started with ``start(..., foreground=tty)``, then take the terminal back.

    What a shell does for a command: the child has a process group of its own
    and the terminal, so the keys that send signals (ctrl+c, ctrl+\\, ctrl+z)
    reach it and not the caller; when it exits, the caller's group is put
    back in the foreground. Returns the exit code as a shell reports it.
    """
    import signal

    try:
        _, status = os.waitpid(pid, 0)
    finally:
        if tty is not None:
            old = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
            try:
                os.tcsetpgrp(tty, os.getpgrp())
            except OSError:
                pass
            finally:
                signal.signal(signal.SIGTTOU, old)
    return exit_code(status)


def exit_code(status: int) -> int:
    """A wait status as a shell would report it (128+N for a signal)."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def relayed_signals() -> set[int]:
    """The signals a waiting roost passes on to the command it runs: INT, TERM, HUP, QUIT."""
    import _signal  # type: ignore[import-not-found]  # `signal` would import enum: not on the hot path

    return {_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP, _signal.SIGQUIT}


def wait_relaying(pid: int, *, unblock: bool = False) -> int:
    """Wait for *pid* and return its wait status, relaying :func:`relayed_signals` to it meanwhile.

    SIGINT is not relayed when it came from our terminal: the terminal sent it
    to the whole foreground process group already. With *unblock*, the relayed
    signals were blocked by the caller: they are unblocked while the child runs
    (pending ones are relayed at once) and blocked again before returning.
    """
    import _signal

    foreground = False
    try:
        foreground = os.isatty(0) and os.tcgetpgrp(0) == os.getpgrp()
    except OSError:
        pass
    sigint = _signal.SIGINT

    def relay(signum: int, frame: object) -> None:
        if signum == sigint and foreground:
            return
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    relayed = relayed_signals()
    old = {s: _signal.signal(s, relay) for s in relayed}
    if unblock:
        _signal.pthread_sigmask(_signal.SIG_UNBLOCK, relayed)
    try:
        _, status = os.waitpid(pid, 0)
    finally:
        if unblock:
            _signal.pthread_sigmask(_signal.SIG_BLOCK, relayed)
        for s, handler in old.items():
            _signal.signal(s, handler)
    return status
