"""What a command in a session gets, schroot's way: environment, ``SCHROOT_*`` variables, directory, shell.

schroot 1.6's rules where build tools depend on them: the default
``environment-filter`` applied to what ``-p`` passes in, the standard PATHs,
the login shell's choice and the working-directory fallbacks.
"""

from __future__ import annotations

import os

from .options import EXIT_FAILURE

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from core.process import Launch

    from .options import Options

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


def filtered_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The caller's environment minus schroot's ``environment-filter``."""
    return {k: v for k, v in environ.items() if k not in FILTERED_NAMES and not k.startswith(FILTERED_PREFIXES)}


def caller_cwd() -> str:
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
