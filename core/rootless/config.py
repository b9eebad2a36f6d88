"""Which mode roost runs in, and where a rootless user's state lives.

``roost`` picks the mode from who runs it: root (directly or through sudo)
gets the system mode (``/var/lib/roost``, ``/run/roost``), anyone else the
rootless mode on their own state. ``--system`` and ``--user`` choose
explicitly; a user asking for ``--system`` is told to use sudo, root asking
for ``--user`` is refused (root's sessions are system sessions).

Rootless paths follow the XDG base directories:

=========================  ==============================================  ==========================
what                       default                                         override
=========================  ==============================================  ==========================
configuration              ``$XDG_CONFIG_HOME/roost/roost.yaml``           ``ROOST_CONFIG``
                           (``~/.config/roost/roost.yaml``)
state root                 ``$XDG_DATA_HOME/roost`` (``~/.local/share``)   ``state-root:``, ``ROOST_ROOT``
runtime root               ``$XDG_RUNTIME_DIR/roost``; without one,        ``run-root:``, ``ROOST_RUN``
                           ``$XDG_STATE_HOME/roost/run``
site profiles              ``$XDG_CONFIG_HOME/roost/profiles``             ``profiles-dir:``, ``ROOST_PROFILES``
=========================  ==============================================  ==========================

The runtime root only holds empty mount points (the mounts live in each
session's own mount namespace), lock files and a cache, so a persistent
fallback is as good as a tmpfs; a ``/tmp`` fallback would invite another user
to create it first.
"""

from __future__ import annotations

import os

from ..errors import BadInput
from ..settings import Settings
from ..settings import load as load_settings

SYSTEM = "system"
USER = "user"


def mode(euid: int | None = None, asked: str | None = None) -> str:
    """``system`` or ``user``: *asked* (from ``--system``/``--user``) if given and possible, else by *euid*."""
    euid = os.geteuid() if euid is None else euid
    if asked == SYSTEM and euid != 0:
        raise BadInput("--system needs root: run roost with sudo (or leave --system out for your own images)")
    if asked == USER and euid == 0:
        raise BadInput("--user is for ordinary users: root's images and sessions are the system's")
    if asked is not None:
        return asked
    return SYSTEM if euid == 0 else USER


def asked(system: object, user: object) -> str | None:
    """The mode ``--system`` and ``--user`` ask for (None: neither); both at once is one line, exit 2."""
    if system and user:
        raise BadInput("--system and --user contradict each other: give one of them")
    return SYSTEM if system else USER if user else None


def _home(env: os._Environ[str] | dict[str, str]) -> str:
    home = env.get("HOME")
    if home and home.startswith("/"):
        return home
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_dir
    except KeyError:
        raise BadInput("rootless roost needs a home directory (set HOME)") from None


def _xdg(env: os._Environ[str] | dict[str, str], name: str, fallback: str) -> str:
    value = env.get(name, "")
    return value if value.startswith("/") else os.path.join(_home(env), fallback)


def _runtime_dir(env: os._Environ[str] | dict[str, str]) -> str | None:
    """``$XDG_RUNTIME_DIR`` if it is a directory of this user's that nobody else may enter."""
    value = env.get("XDG_RUNTIME_DIR", "")
    if not value.startswith("/"):
        return None
    try:
        st = os.stat(value)
    except OSError:
        return None
    if st.st_uid != os.geteuid() or st.st_mode & 0o077:
        return None
    return value


def user_defaults(environ: os._Environ[str] | dict[str, str] | None = None) -> dict[str, object]:
    """The rootless defaults of the settings that name paths (Settings attribute names)."""
    env = os.environ if environ is None else environ
    config_home = _xdg(env, "XDG_CONFIG_HOME", ".config")
    runtime = _runtime_dir(env)
    return {
        "config_path": os.path.join(config_home, "roost", "roost.yaml"),
        "state_root": os.path.join(_xdg(env, "XDG_DATA_HOME", ".local/share"), "roost"),
        "run_root": os.path.join(runtime, "roost")
        if runtime
        else os.path.join(_xdg(env, "XDG_STATE_HOME", ".local/state"), "roost", "run"),
        "profiles_dir": os.path.join(config_home, "roost", "profiles"),
    }


def load(root: str | None = None, environ: os._Environ[str] | dict[str, str] | None = None) -> Settings:
    """Settings of the rootless mode: the user's roost.yaml over the XDG defaults, then ROOST_* and *root*."""
    return load_settings(root, environ, defaults=user_defaults(environ))
