"""Global settings: /etc/roost/roost.yaml, with ROOST_* overrides.

This module is on the hot path of every command (``session run`` included),
so it imports nothing beyond ``os``: the usual ``key: value`` lines are read
by a small parser that hands anything else (quotes, lists, odd scalars) to
the real YAML parser, so both always agree.
"""

from __future__ import annotations

import os

DEFAULT_CONFIG = "/etc/roost/roost.yaml"
DEFAULT_STATE_ROOT = "/var/lib/roost"
DEFAULT_RUN_ROOT = "/run/roost"
DEFAULT_PROFILES_DIR = "/etc/roost/profiles"
DEFAULT_SYSLOG = "/dev/log"

# key in roost.yaml -> (attribute, type, default)
_KEYS: dict[str, tuple[str, type, object]] = {
    "state-root": ("state_root", str, DEFAULT_STATE_ROOT),
    "run-root": ("run_root", str, DEFAULT_RUN_ROOT),
    "profiles-dir": ("profiles_dir", str, DEFAULT_PROFILES_DIR),
    "default-backend": ("default_backend", str, "auto"),
    "retention": ("retention", int, 5),
    "overlay-max-depth": ("overlay_max_depth", int, 16),
    "end-grace": ("end_grace", float, 5.0),
    "lock-timeout": ("lock_timeout", float, 60.0),
    "syslog": ("syslog", str, DEFAULT_SYSLOG),
    "zfs-dataset": ("zfs_dataset", str, ""),
    "btrfs-pool": ("btrfs_pool", str, ""),
    "admin-group": ("admin_group", str, ""),
    "max-sessions-per-user": ("max_sessions_per_user", int, 64),
    "cgroup-parent": ("cgroup_parent", str, "roost"),
}

#: String settings that are not paths.
_NOT_PATHS = frozenset(("default-backend", "zfs-dataset", "syslog", "admin-group", "cgroup-parent"))

#: Variables that move roost's state, configuration or logging: only root itself may set them.
PATH_VARIABLES = ("ROOST_ROOT", "ROOST_RUN", "ROOST_CONFIG", "ROOST_PROFILES", "ROOST_SYSLOG")


class Settings:
    """Resolved settings; precedence: command line > environment > roost.yaml > default."""

    __slots__ = (
        "admin_group",
        "btrfs_pool",
        "cgroup_parent",
        "config_path",
        "default_backend",
        "end_grace",
        "lock_timeout",
        "max_sessions_per_user",
        "overlay_max_depth",
        "profiles_dir",
        "retention",
        "run_root",
        "state_root",
        "syslog",
        "zfs_dataset",
    )

    config_path: str
    state_root: str
    run_root: str
    profiles_dir: str
    default_backend: str
    retention: int
    overlay_max_depth: int
    end_grace: float
    lock_timeout: float
    syslog: str
    zfs_dataset: str
    btrfs_pool: str
    admin_group: str
    max_sessions_per_user: int
    cgroup_parent: str

    def __init__(self, **values: object) -> None:
        self.config_path = DEFAULT_CONFIG
        for attr, _, default in _KEYS.values():
            setattr(self, attr, default)
        for key, value in values.items():
            setattr(self, key, value)

    def replace(self, **values: object) -> Settings:
        merged = {name: getattr(self, name) for name in self.__slots__}
        merged.update(values)
        return Settings(**merged)

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__)
        return f"Settings({inner})"


_YAML_WORDS = frozenset(("true", "false", "yes", "no", "on", "off", "null", "y", "n", ".inf", ".nan", "-.inf"))
_PLAIN = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-/+")


def _scalar(token: str) -> object:
    """A plain YAML scalar that cannot mean anything but one int, float or string; else raise."""
    if not token or not set(token) <= _PLAIN or token.lower() in _YAML_WORDS or (token[0] in "-.+" and len(token) == 1):
        raise ValueError(token)
    digits = token[1:] if token[0] == "-" else token
    if digits.isdigit():
        if len(digits) > 1 and digits[0] == "0":
            raise ValueError(token)  # octal in YAML 1.1
        return int(token)
    head, dot, tail = digits.partition(".")
    if dot and head.isdigit() and tail.isdigit():
        return float(token)
    if any(c.isdigit() for c in token[:1]) or token[0] in "-+.":
        raise ValueError(token)  # something number-like (1e3, 1_000 …): let YAML decide
    return token


def _flat(text: str) -> dict[str, object] | None:
    """Parse the common shape of roost.yaml (``key: value`` lines) without importing yaml.

    Returns None for anything else (quotes, lists, anchors, multi-line values …),
    and the full YAML parser decides.
    """
    out: dict[str, object] = {}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped == "---":
            if out:
                return None  # a second document: let YAML say what it thinks of that
            continue
        if line[0] in " \t":
            return None
        key, sep, value = line.partition(":")
        if not sep or not key or not set(key) <= _PLAIN or key in out:
            return None
        value, _, _comment = value.partition(" #")
        value = value.strip()
        if not value or "#" in value:
            return None
        try:
            out[key] = _scalar(value)
        except ValueError:
            return None
    return out


def _parse(path: str, text: str) -> dict[str, object]:
    from .errors import ConfigError

    data = _flat(text)
    if data is None:
        from .yamlio import parse_yaml

        data = parse_yaml(text, path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings")
    values: dict[str, object] = {}
    for key, value in data.items():
        if key not in _KEYS:
            known = ", ".join(sorted(_KEYS))
            raise ConfigError(f"{path}: unknown setting {key!r} (known: {known})")
        attr, kind, _ = _KEYS[key]
        if key == "syslog" and value is False:
            value = "off"  # YAML reads a bare off as false
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ConfigError(f"{path}: {key} must be a {kind.__name__}, not {value!r}")
        if key == "syslog" and value != "off" and not str(value).startswith("/"):
            raise ConfigError(f"{path}: syslog must be the absolute path of a socket, or off")
        if kind is str and key not in _NOT_PATHS and not str(value).startswith("/"):
            raise ConfigError(f"{path}: {key} must be an absolute path")
        if key == "default-backend" and value not in (backends := _backends()):
            raise ConfigError(f"{path}: default-backend must be one of {', '.join(backends)}, not {value!r}")
        if key == "admin-group" and not _group_name(str(value)):
            raise ConfigError(f"{path}: admin-group must be a group name, not {value!r}")
        if key == "cgroup-parent" and not _cgroup_name(str(value)):
            raise ConfigError(f"{path}: cgroup-parent must be one directory name like roost, not {value!r}")
        if key == "zfs-dataset" and not _dataset_name(str(value)):
            raise ConfigError(f"{path}: zfs-dataset must be a dataset name like tank/roost, not {value!r}")
        if kind in (int, float) and isinstance(value, (int, float)) and value < (1 if kind is int else 0):
            raise ConfigError(f"{path}: {key} must be positive")
        values[attr] = value
    return values


def _backends() -> tuple[str, ...]:
    """Values of default-backend: the registry's names (core.backends imports no backend at load).

    Imported only when roost.yaml sets default-backend: ``session run`` reads the
    settings and pays for no module it does not need.
    """
    from .backends import AUTO, NAMES

    return (AUTO, *NAMES)


def _cgroup_name(value: str) -> bool:
    allowed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
    return bool(value) and set(value) <= allowed and value[0].isalnum() and len(value) <= 64


def _dataset_name(value: str) -> bool:
    allowed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-/")
    parts = value.split("/")
    return bool(value) and set(value) <= allowed and all(p and p[0].isalnum() for p in parts) and len(value) < 200


def _group_name(value: str) -> bool:
    allowed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
    return 0 < len(value) <= 64 and set(value) <= allowed and value[0] not in "-."


#: The configuration file of this installation. A launcher (bin/roost, as scripts/install writes
#: it) may name another one before roost starts: the path is part of the installed program, so a
#: sudo caller cannot choose it, unlike ``ROOST_CONFIG`` or ``--root``.
SITE_CONFIG = DEFAULT_CONFIG


def trusted_caller(environ: os._Environ[str] | dict[str, str] | None = None) -> bool:
    """True unless roost runs as root for someone else (through sudo): only then are paths fixed."""
    from .actor import sudo_uid

    env = os.environ if environ is None else environ
    return os.geteuid() != 0 or sudo_uid(env) is None


def load(
    root: str | None = None,
    environ: os._Environ[str] | dict[str, str] | None = None,
    *,
    trusted: bool | None = None,
    defaults: dict[str, object] | None = None,
) -> Settings:
    """Read roost.yaml and apply overrides (``ROOST_*`` variables, *root*).

    Only a trusted caller (root itself, or a user on their own state) may move
    the configuration, state, runtime, profiles or syslog paths. Through sudo
    roost reads :data:`SITE_CONFIG`, which must be root's and writable by no
    one else, and a ``ROOST_*`` path variable or a state root on the command
    line is refused with one line (:class:`NotPermitted`): nothing the caller
    chooses decides where roost reads records or mounts from.

    *defaults* replace the built-in defaults (attribute names, plus
    ``config_path`` for the file read when ``ROOST_CONFIG`` is not set): the
    rootless mode's paths under the user's XDG directories (core.rootless.config).
    """
    env = os.environ if environ is None else environ
    if trusted is None:
        trusted = trusted_caller(env)
    if not trusted:
        from .errors import NotPermitted

        chosen = [name for name in PATH_VARIABLES if env.get(name)]
        if chosen:
            raise NotPermitted(f"{chosen[0]} is set: through sudo, roost reads its paths from {SITE_CONFIG} only")
        if root:
            raise NotPermitted(f"--root: through sudo, roost uses the state root of {SITE_CONFIG} only")
    values: dict[str, object] = dict(defaults or {})
    path = (env.get("ROOST_CONFIG") if trusted else None) or str(values.get("config_path") or SITE_CONFIG)
    values["config_path"] = path
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | (0 if trusted else os.O_NOFOLLOW))
    except FileNotFoundError:
        raw = b""
    except OSError as e:
        from .errors import ConfigError

        raise ConfigError(f"{path}: {e.strerror}") from None
    else:
        with open(fd, "rb") as f:
            if not trusted:
                from .trust import check_owned_file

                check_owned_file(f.fileno(), path, "configuration file")
            raw = f.read((1 << 20) + 1)
    if raw:
        from .errors import ConfigError

        if len(raw) > 1 << 20:
            raise ConfigError(f"{path}: larger than 1 MiB")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not valid UTF-8") from None
        values.update(_parse(path, text))
    if trusted:
        for name, attr in (
            ("ROOST_ROOT", "state_root"),
            ("ROOST_RUN", "run_root"),
            ("ROOST_PROFILES", "profiles_dir"),
            ("ROOST_SYSLOG", "syslog"),
        ):
            if env.get(name):
                values[attr] = env[name]
        if root:
            values["state_root"] = root
    settings = Settings(**values)
    for attr in ("state_root", "run_root", "profiles_dir", "syslog"):
        value = getattr(settings, attr)
        if not value.startswith("/") and not (attr == "syslog" and value == "off"):
            setattr(settings, attr, os.path.abspath(value))
    # The roots without symbolic links (/var/run -> /run, say): every path roost builds below
    # them can then be opened with symbolic links refused at every component.
    settings.state_root = os.path.realpath(settings.state_root)
    settings.run_root = os.path.realpath(settings.run_root)
    return settings
