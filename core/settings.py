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
}

#: Values of default-backend (core.backends has the backends themselves; this module stays light).
_BACKENDS = ("auto", "overlay", "dir", "btrfs", "zfs", "squashfs", "erofs")

#: String settings that are not paths.
_NOT_PATHS = frozenset(("default-backend", "zfs-dataset", "syslog"))


class Settings:
    """Resolved settings; precedence: command line > environment > roost.yaml > default."""

    __slots__ = (
        "btrfs_pool",
        "config_path",
        "default_backend",
        "end_grace",
        "lock_timeout",
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
        if key == "default-backend" and value not in _BACKENDS:
            raise ConfigError(f"{path}: default-backend must be one of {', '.join(_BACKENDS)}, not {value!r}")
        if key == "zfs-dataset" and not _dataset_name(str(value)):
            raise ConfigError(f"{path}: zfs-dataset must be a dataset name like tank/roost, not {value!r}")
        if kind in (int, float) and isinstance(value, (int, float)) and value < (1 if kind is int else 0):
            raise ConfigError(f"{path}: {key} must be positive")
        values[attr] = value
    return values


def _dataset_name(value: str) -> bool:
    allowed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-/")
    parts = value.split("/")
    return bool(value) and set(value) <= allowed and all(p and p[0].isalnum() for p in parts) and len(value) < 200


def load(
    root: str | None = None,
    environ: os._Environ[str] | dict[str, str] | None = None,
    *,
    defaults: dict[str, object] | None = None,
) -> Settings:
    """Read roost.yaml (``ROOST_CONFIG`` overrides its path) and apply overrides.

    *defaults* replace the built-in defaults (attribute names, plus
    ``config_path`` for the file read when ``ROOST_CONFIG`` is not set): the
    rootless mode's paths under the user's XDG directories (core.rootless.config).
    """
    env = os.environ if environ is None else environ
    values: dict[str, object] = dict(defaults or {})
    path = env.get("ROOST_CONFIG") or str(values.get("config_path") or DEFAULT_CONFIG)
    values["config_path"] = path
    try:
        with open(path, "rb") as f:
            raw = f.read((1 << 20) + 1)
    except FileNotFoundError:
        raw = b""
    except OSError as e:
        from .errors import ConfigError

        raise ConfigError(f"{path}: {e.strerror}") from None
    if raw:
        from .errors import ConfigError

        if len(raw) > 1 << 20:
            raise ConfigError(f"{path}: larger than 1 MiB")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not valid UTF-8") from None
        values.update(_parse(path, text))
    if env.get("ROOST_ROOT"):
        values["state_root"] = env["ROOST_ROOT"]
    if env.get("ROOST_RUN"):
        values["run_root"] = env["ROOST_RUN"]
    if env.get("ROOST_PROFILES"):
        values["profiles_dir"] = env["ROOST_PROFILES"]
    if env.get("ROOST_SYSLOG"):
        values["syslog"] = env["ROOST_SYSLOG"]
    if root:
        values["state_root"] = root
    settings = Settings(**values)
    for attr in ("state_root", "run_root", "profiles_dir", "syslog"):
        value = getattr(settings, attr)
        if not value.startswith("/") and not (attr == "syslog" and value == "off"):
            setattr(settings, attr, os.path.abspath(value))
    return settings
