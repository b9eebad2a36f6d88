"""Reaching other hosts with OpenSSH: one shared connection per host, commands quoted for the remote shell.

roost has no daemon and no port of its own: a command for another host is
``ssh HOST 'roost …'``, authenticated and authorized by ssh and by the
roost on that host, exactly as if the caller had logged in there. Every
command for one host goes through one connection (OpenSSH multiplexing:
``ControlMaster``, ``ControlPath``, ``ControlPersist``): the first command
starts a master that stays for :data:`PERSIST` seconds after its last use,
the others open a session on it, which costs no key exchange and no
authentication.

Control sockets live in a directory of the caller's own (``ROOST_SSH_DIR``,
else ``$XDG_RUNTIME_DIR/roost-ssh``, else ``/tmp/roost-ssh-<uid>``), mode
0700, refused when anyone else owns it. When roost runs through sudo, ssh
runs as the person behind it (``SUDO_USER``), with their keys, their
``~/.ssh/config`` and their sockets: sudo rights on this host never become
root's identity on another.
"""

from __future__ import annotations

import os
import subprocess

from .errors import SystemFailure
from .hosts import Host

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any

#: Seconds a master connection stays open after its last session.
PERSIST = 600
#: Seconds between keep-alive probes, and how many may go unanswered: a host that
#: stops answering is given up after about PROBE * PROBES seconds.
PROBE = 5
PROBES = 3


class Unreachable(SystemFailure):
    """ssh could not connect to (or lost) a host; the message is ssh's own last line."""


class Caller:
    """Who runs ssh: the process itself, or (under sudo) the person behind it."""

    __slots__ = ("gid", "groups", "home", "uid", "user")

    def __init__(self, uid: int, gid: int, groups: list[int], home: str, user: str) -> None:
        self.uid = uid
        self.gid = gid
        self.groups = groups
        self.home = home
        self.user = user

    @classmethod
    def current(cls, environ: Mapping[str, str] | None = None) -> Caller:
        import pwd

        env = os.environ if environ is None else environ
        uid = os.geteuid()
        sudo_uid = env.get("SUDO_UID", "")
        if uid == 0 and sudo_uid.isdigit() and int(sudo_uid) != 0:
            uid = int(sudo_uid)
        try:
            pw = pwd.getpwuid(uid)
        except KeyError:
            raise SystemFailure(f"uid {uid} has no passwd entry: ssh needs a home directory") from None
        if uid == os.geteuid():
            return cls(uid, os.getegid(), [], env.get("HOME") or pw.pw_dir, pw.pw_name)
        return cls(uid, pw.pw_gid, os.getgrouplist(pw.pw_name, pw.pw_gid), pw.pw_dir, pw.pw_name)

    @property
    def switches(self) -> bool:
        """True when ssh must run as another user than this process (roost under sudo)."""
        return self.uid != os.geteuid()

    def environ(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        if self.switches:
            for key in ("SUDO_USER", "SUDO_UID", "SUDO_GID", "SUDO_COMMAND", "MAIL"):
                env.pop(key, None)
            env.update(HOME=self.home, USER=self.user, LOGNAME=self.user)
        return env

    def preexec(self, parent: int | None) -> Callable[[], None] | None:
        """What the ssh child does before exec: die with roost (if *parent*), become the caller.

        Everything it needs is looked up here, before the fork: the child of a
        process with threads (batch on several hosts) must not import. None
        when there is nothing to do: subprocess then starts ssh with vfork,
        which does not copy the parent's memory (the console polls many
        hosts from a large process, and a fork holds its interpreter lock).
        """
        if parent is None and not self.switches:
            return None
        import ctypes

        prctl = ctypes.CDLL(None).prctl

        def child() -> None:
            if parent is not None:
                prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL
                if os.getppid() != parent:
                    os._exit(1)
            if self.switches:
                os.setgroups(self.groups)
                os.setgid(self.gid)
                os.setuid(self.uid)

        return child

    def become(self) -> None:
        """Turn this process into the caller for good (before exec'ing ssh)."""
        if self.switches:
            os.setgroups(self.groups)
            os.setgid(self.gid)
            os.setuid(self.uid)
            os.environ.update(self.environ())


def control_dir(caller: Caller, environ: Mapping[str, str] | None = None) -> str:
    """The caller's private directory for control sockets (created 0700; refused if someone else's)."""
    import stat

    env = os.environ if environ is None else environ
    path = env.get("ROOST_SSH_DIR") or ""
    if not path:
        runtime = env.get("XDG_RUNTIME_DIR") or ""
        try:
            if runtime and not caller.switches and os.stat(runtime).st_uid == caller.uid:
                path = os.path.join(runtime, "roost-ssh")
        except OSError:
            pass
    if not path:
        path = f"/tmp/roost-ssh-{caller.uid}"
    try:
        os.mkdir(path, 0o700)
        if caller.switches:
            os.chown(path, caller.uid, caller.gid)
    except FileExistsError:
        pass
    except OSError as e:
        raise SystemFailure(f"cannot create {path} for ssh's control sockets: {e.strerror}") from None
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != caller.uid or st.st_mode & 0o077:
        raise SystemFailure(
            f"{path} must be a directory of uid {caller.uid} with mode 0700 (it holds ssh's control sockets); "
            "refusing to use it"
        )
    return path


def quote(words: Sequence[str]) -> str:
    """*words* as one command line for the remote POSIX shell: every word arrives as it was."""
    import shlex

    return " ".join(shlex.quote(w) for w in words)


class Connection:
    """Commands for one host over its shared ssh connection."""

    def __init__(
        self,
        host: Host,
        *,
        caller: Caller | None = None,
        environ: Mapping[str, str] | None = None,
        batch: bool | None = None,
        connect_timeout: float | None = None,
    ) -> None:
        import hashlib

        self.host = host
        self.caller = caller if caller is not None else Caller.current(environ)
        self.base_environ = dict(os.environ if environ is None else environ)
        self.dir = control_dir(self.caller, self.base_environ)
        key = "\x00".join([host.destination, str(host.port or ""), *(f"{k}={v}" for k, v in host.options)])
        self.control_path = os.path.join(self.dir, hashlib.sha256(key.encode()).hexdigest()[:16])
        if len(os.fsencode(self.control_path)) + 17 > 107:  # ssh adds a random suffix while it binds
            raise SystemFailure(f"{self.dir} is too long a path for ssh's control sockets (ROOST_SSH_DIR)")
        if batch is None:
            try:
                batch = not os.isatty(0)
            except OSError:
                batch = True
        self.batch = batch
        self.connect_timeout = connect_timeout

    # --- argv ---------------------------------------------------------------------

    def options(self, *, master: str = "auto") -> list[str]:
        """ssh's options: the host's own first (ssh keeps the first value it is given), then roost's."""
        argv = ["ssh"]
        for key, value in self.host.options:
            argv += ["-o", f"{key}={value}"]
        argv += [
            "-o",
            f"ControlMaster={master}",
            "-o",
            f"ControlPath={self.control_path}",
            "-o",
            f"ControlPersist={PERSIST}",
            "-o",
            f"ServerAliveInterval={PROBE}",
            "-o",
            f"ServerAliveCountMax={PROBES}",
            "-o",
            "LogLevel=ERROR",
        ]
        if self.batch:
            argv += ["-o", "BatchMode=yes"]
        if self.connect_timeout is not None:
            argv += ["-o", f"ConnectTimeout={max(1, int(self.connect_timeout + 0.999))}"]
        if self.host.port is not None:
            argv += ["-p", str(self.host.port)]
        return argv

    def remote_command(self, words: Sequence[str]) -> str:
        """The command line the remote shell runs: the host's roost command and *words*, quoted."""
        return quote([*self.host.command, *words])

    def argv(self, words: Sequence[str], *, tty: bool | str = False, stdin: bool = True) -> list[str]:
        """ssh's argv to run roost *words* on the host (``tty``: True for -t, "force" for -tt)."""
        argv = self.options()
        argv.append("-tt" if tty == "force" else "-t" if tty else "-T")
        if not stdin:
            argv.append("-n")
        return [*argv, "--", self.host.destination, self.remote_command(words)]

    # --- the shared connection ------------------------------------------------------

    def _control(self, op: str, timeout: float = 10.0) -> int:
        argv = [*self.options(master="no"), "-O", op, "--", self.host.destination]
        try:
            proc = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=self.caller.environ(self.base_environ),
                preexec_fn=self.caller.preexec(None),
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return 255
        return proc.returncode

    def alive(self) -> bool:
        """True when a master connection runs for this host."""
        return os.path.exists(self.control_path) and self._control("check") == 0

    def connect(self, timeout: float | None = None) -> None:
        """Make sure a master connection runs; :class:`Unreachable` (one line) if ssh cannot connect.

        Never takes longer than *timeout* seconds (when given): a host that
        does not answer is given up.
        """
        if os.path.exists(self.control_path):
            return  # a master runs (or its socket is stale, which ssh notices and replaces)
        import fcntl
        import tempfile
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        lock = os.open(self.control_path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            while True:  # one master per host: the others wait for it, boundedly
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if deadline is not None and time.monotonic() > deadline:
                        raise Unreachable(f"cannot reach {self.host.name}: no answer within {timeout:g} s") from None
                    time.sleep(0.02)
            if os.path.exists(self.control_path):
                return
            argv = [*self.options(master="yes"), "-f", "-N", "--", self.host.destination]
            with tempfile.TemporaryFile() as err:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                    env=self.caller.environ(self.base_environ),
                    preexec_fn=self.caller.preexec(None),
                )
                try:
                    code = proc.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                    raise Unreachable(f"cannot reach {self.host.name}: no answer within {timeout:g} s") from None
                if code != 0:
                    err.seek(0)
                    lines = [ln.strip() for ln in err.read().decode(errors="replace").splitlines() if ln.strip()]
                    why = lines[-1] if lines else f"ssh exited with {code}"
                    raise Unreachable(f"cannot reach {self.host.name}: {why}")
        finally:
            os.close(lock)

    def close(self) -> None:
        """Stop the master connection (if one runs)."""
        if os.path.exists(self.control_path):
            self._control("exit")

    # --- running roost there ---------------------------------------------------------

    def popen(
        self, words: Sequence[str], *, tty: bool | str = False, die_with_parent: bool = True, **kwargs: Any
    ) -> subprocess.Popen[bytes]:
        """Start ``roost WORDS`` on the host (after :meth:`connect`); same keywords as Popen.

        ssh dies with this process (*die_with_parent*): a killed push or pull
        closes its session, and the other side sees its stream end.
        """
        stdin = kwargs.get("stdin") is not subprocess.DEVNULL
        argv = self.argv(words, tty=tty, stdin=stdin)
        if os.environ.get("ROOST_DEBUG"):
            import sys

            print(f"roost: running {quote(argv)}", file=sys.stderr)
        return subprocess.Popen(
            argv,
            env=self.caller.environ(self.base_environ),
            preexec_fn=self.caller.preexec(os.getpid() if die_with_parent else None),
            **kwargs,
        )

    def run(
        self, words: Sequence[str], *, input: bytes | None = None, timeout: float | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``roost WORDS`` on the host, capturing its output; :class:`Unreachable` on a timeout."""
        proc = self.popen(
            words,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            # Not communicate(): the master connection holds copies of our pipes (ssh passes
            # them to it), so their ends come only when it gives the host up.
            proc.kill()
            proc.wait()
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
            raise Unreachable(f"{self.host.name} did not answer within {timeout:.1f} s") from None
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def lost(self, code: int) -> bool:
        """Whether exit code *code* of a command means ssh lost the connection (not roost's own code)."""
        return code == 255 and not self.alive()


def remote_error(stderr: bytes, code: int, host: Host) -> str:
    """The one line to show for a command that failed on *host*: roost's own message, or ssh's."""
    lines = [ln.strip() for ln in stderr.decode(errors="replace").splitlines() if ln.strip()]
    if not lines:
        if code == 255:
            return "the command there was killed, or ssh failed (exit code 255)"
        return f"the command there ended without a message (exit code {code})"
    last = lines[-1]
    return last[len("roost: ") :] if last.startswith("roost: ") else last
