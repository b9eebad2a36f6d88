"""Other build hosts: ``hosts.yaml`` and the HOST arguments of ``--host``, ``image push`` and ``image pull``.

A HOST is ``ssh://[user@]host[:port]`` or the name of an entry in
``hosts.yaml``. The files read are ``/etc/roost/hosts.yaml`` (the site's
hosts), then ``~/.config/roost/hosts.yaml`` (the caller's own; an entry of the
same name replaces the site's); ``ROOST_HOSTS`` names one file to read
instead of both. Through sudo, the caller's files are read with the caller's
rights (core/callerfs.py) and ``~`` is the caller's home. The schema::

    defaults:                       # optional, for every host below and for ssh:// hosts
      user: builder
      command: [sudo, -n, roost]    # the roost command on the other host (default: roost)
      ssh-options: {IdentityFile: ~/.ssh/id_roost}
    hosts:
      build1:
        address: build1.example.org   # required: a host name or an IP address
        port: 2222                    # optional (default: ssh's)
        user: root                    # optional (default: ssh's)
        description: arm64 builders   # optional, shown by the console
        ssh-options:                  # optional: ssh_config(5) keywords, passed as -o Key=Value
          ProxyJump: bastion.example.org

Nothing here opens a connection (see :mod:`core.ssh`); this module only
reads configuration and checks it: every error is one line naming the file.
"""

from __future__ import annotations

import os

from .errors import BadInput, ConfigError, NotFound
from .names import is_valid_name, printable
from .struct import Struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

SITE_FILE = "/etc/roost/hosts.yaml"
USER_FILE = "~/.config/roost/hosts.yaml"
DEFAULT_COMMAND = ("roost",)

_HOST_KEYS = frozenset({"address", "port", "user", "command", "ssh-options", "description"})
_DEFAULT_KEYS = _HOST_KEYS - {"address", "description"}
_ADDRESS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-_:%")
_USER = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-$")
_OPTION = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
#: ssh options roost sets itself: the connection sharing depends on them.
_RESERVED = frozenset({"controlmaster", "controlpath", "controlpersist"})


class Host(Struct, frozen=True):
    """How to reach one host: ssh's destination, port and options, and the roost command there."""

    name: str  # the name in hosts.yaml, or the ssh:// URL as given
    address: str
    user: str | None = None
    port: int | None = None
    command: tuple[str, ...] = DEFAULT_COMMAND
    options: tuple[tuple[str, str], ...] = ()
    description: str = ""
    source: str = ""  # the file the entry came from ("" for an ssh:// URL without defaults)

    @property
    def destination(self) -> str:
        """``user@address`` or ``address``, as ssh's destination argument."""
        return f"{self.user}@{self.address}" if self.user else self.address

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "address": self.address,
            "user": self.user,
            "port": self.port,
            "command": list(self.command),
            "ssh-options": dict(self.options),
            "description": self.description,
            "source": self.source,
        }


class HostsFile(Struct, frozen=True):
    """The parsed hosts files: defaults and named hosts."""

    defaults: dict[str, Any] = {}
    hosts: dict[str, Host] = {}
    files: tuple[str, ...] = ()


# --- checking values -------------------------------------------------------------------


def check_address(value: object, where: str) -> str:
    """A host name, an IPv4 address or an IPv6 address; never something ssh would read as an option."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: address must be a host name or an IP address")
    if value.startswith("-") or not set(value) <= _ADDRESS or len(value) > 255:
        raise ConfigError(f"{where}: invalid address {printable(value)}")
    return value


def check_user(value: object, where: str) -> str:
    if not isinstance(value, str) or not value or value.startswith("-") or not set(value) <= _USER or len(value) > 64:
        raise ConfigError(f"{where}: invalid user {printable(str(value))}")
    return value


def check_port(value: object, where: str) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ConfigError(f"{where}: port must be a number from 1 to 65535, not {value!r}")
    return value


def check_command(value: object, where: str) -> tuple[str, ...]:
    """The roost command on the other host: a list of words, or a string split like a shell would."""
    if isinstance(value, str):
        import shlex

        try:
            words = shlex.split(value)
        except ValueError as e:
            raise ConfigError(f"{where}: command: {e}") from None
    elif isinstance(value, list) and all(isinstance(w, str) for w in value):
        words = list(value)
    else:
        raise ConfigError(f"{where}: command must be a string or a list of words")
    if not words or any(not w or "\x00" in w or "\n" in w for w in words):
        raise ConfigError(f"{where}: command must be non-empty words without NUL or line breaks")
    return tuple(words)


def check_options(value: object, where: str) -> tuple[tuple[str, str], ...]:
    """ssh_config(5) keywords and their values, as ``-o Key=Value`` pairs."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: ssh-options must be a mapping of ssh_config keywords to values")
    out = []
    for key, raw in value.items():
        if not isinstance(key, str) or not key or not set(key) <= _OPTION:
            raise ConfigError(f"{where}: ssh-options: invalid keyword {printable(str(key))}")
        if key.lower() in _RESERVED:
            raise ConfigError(f"{where}: ssh-options: {key} is set by roost (it shares one connection per host)")
        if isinstance(raw, bool):
            text = "yes" if raw else "no"
        elif isinstance(raw, (int, float, str)):
            text = str(raw)
        else:
            raise ConfigError(f"{where}: ssh-options: {key} must be a single value")
        if not text or "\n" in text or "\x00" in text:
            raise ConfigError(f"{where}: ssh-options: {key} has an empty or multi-line value")
        out.append((key, text))
    return tuple(out)


# --- files -----------------------------------------------------------------------------


def paths(environ: Mapping[str, str] | None = None, home: str | None = None) -> list[str]:
    """The hosts files to read, site first: ``ROOST_HOSTS`` alone when it is set."""
    env = os.environ if environ is None else environ
    if env.get("ROOST_HOSTS"):
        return [env["ROOST_HOSTS"]]
    home = home or env.get("HOME") or os.path.expanduser("~")
    return [SITE_FILE, USER_FILE.replace("~", home, 1)]


def _caller_files(environ: Mapping[str, str] | None) -> tuple[Any, str | None]:
    """Under sudo: the caller's files (read with their rights) and their home; else (None, None)."""
    import pwd

    from .actor import Actor
    from .callerfs import CallerFiles, needs_caller_rights

    actor = Actor.current(dict(os.environ if environ is None else environ))
    if not needs_caller_rights(actor):
        return None, None
    try:
        home = pwd.getpwuid(actor.uid).pw_dir
    except KeyError:
        home = None
    return CallerFiles(actor), home


def _read(path: str, files: Any = None) -> Any:
    """The YAML in *path* (None if there is no such file); a caller's file is read with their rights."""
    from .yamlio import parse_yaml

    try:
        if files is not None and path != SITE_FILE:
            with os.fdopen(files.open(path, os.O_RDONLY), "rb") as f:
                raw = f.read((1 << 20) + 1)
        else:
            with open(path, "rb") as f:
                raw = f.read((1 << 20) + 1)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror}") from None
    if len(raw) > 1 << 20:
        raise ConfigError(f"{path}: larger than 1 MiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid UTF-8") from None
    return parse_yaml(text, path)


def _check_defaults(data: object, where: str) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: defaults must be a mapping")
    unknown = sorted(str(k) for k in data if k not in _DEFAULT_KEYS)
    if unknown:
        raise ConfigError(f"{where}: defaults: unknown key {unknown[0]!r} (known: {', '.join(sorted(_DEFAULT_KEYS))})")
    out: dict[str, Any] = {}
    if "user" in data:
        out["user"] = check_user(data["user"], f"{where}: defaults")
    if "port" in data:
        out["port"] = check_port(data["port"], f"{where}: defaults")
    if "command" in data:
        out["command"] = check_command(data["command"], f"{where}: defaults")
    if "ssh-options" in data:
        out["options"] = check_options(data["ssh-options"], f"{where}: defaults")
    return out


def _host(name: str, data: object, defaults: dict[str, Any], path: str) -> Host:
    where = f"{path}: host {name}"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping with at least 'address'")
    unknown = sorted(str(k) for k in data if k not in _HOST_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(_HOST_KEYS))})")
    if "address" not in data:
        raise ConfigError(f"{where}: no address")
    options = dict(defaults.get("options", ()))
    options.update(check_options(data["ssh-options"], where) if "ssh-options" in data else ())
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ConfigError(f"{where}: description must be text")
    return Host(
        name=name,
        address=check_address(data["address"], where),
        user=check_user(data["user"], where) if "user" in data else defaults.get("user"),
        port=check_port(data["port"], where) if "port" in data else defaults.get("port"),
        command=check_command(data["command"], where)
        if "command" in data
        else defaults.get("command", DEFAULT_COMMAND),
        options=tuple(options.items()),
        description=description,
        source=path,
    )


def load(environ: Mapping[str, str] | None = None) -> HostsFile:
    """Read the hosts files (missing files are empty); a later file's entries replace earlier ones."""
    defaults: dict[str, Any] = {}
    raw_hosts: dict[str, tuple[object, str]] = {}
    read: list[str] = []
    files, home = _caller_files(environ)
    for path in paths(environ, home):
        data = _read(path, files)
        if data is None:
            continue
        read.append(path)
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping with 'hosts' (and optionally 'defaults')")
        unknown = sorted(str(k) for k in data if k not in ("hosts", "defaults"))
        if unknown:
            raise ConfigError(f"{path}: unknown key {unknown[0]!r} (a hosts file has hosts and defaults)")
        defaults.update(_check_defaults(data.get("defaults"), path))
        entries = data.get("hosts") or {}
        if not isinstance(entries, dict):
            raise ConfigError(f"{path}: hosts must be a mapping of names to hosts")
        for name, entry in entries.items():
            if not is_valid_name(name):
                raise ConfigError(f"{path}: invalid host name {printable(str(name))}")
            raw_hosts[str(name)] = (entry, path)
    hosts = {name: _host(name, entry, defaults, path) for name, (entry, path) in raw_hosts.items()}
    return HostsFile(defaults=defaults, hosts=hosts, files=tuple(read))


def parse_url(url: str, defaults: Mapping[str, Any] | None = None) -> Host:
    """``ssh://[user@]host[:port]`` (IPv6 addresses in brackets) as a :class:`Host`."""
    defaults = defaults or {}
    rest = url[len("ssh://") :]
    where = f"host {printable(url)}"
    if not rest or "/" in rest.rstrip("/") or "?" in rest or "#" in rest:
        raise BadInput(f"{where}: expected ssh://[user@]host[:port]")
    rest = rest.rstrip("/")
    user = defaults.get("user")
    if "@" in rest:
        raw_user, rest = rest.rsplit("@", 1)
        try:
            user = check_user(raw_user, where)
        except ConfigError as e:
            raise BadInput(str(e)) from None
    port = defaults.get("port")
    if rest.startswith("["):
        address, _, tail = rest[1:].partition("]")
        if tail and not tail.startswith(":"):
            raise BadInput(f"{where}: expected [address]:port")
        port_text = tail[1:] if tail else None
    else:
        address, colon, port_text = rest.partition(":")
        if not colon:
            port_text = None
    try:
        check_address(address, where)
        if port_text is not None:
            port = check_port(port_text, where)
    except ConfigError as e:
        raise BadInput(str(e)) from None
    return Host(
        name=url,
        address=address,
        user=user,
        port=port,
        command=defaults.get("command", DEFAULT_COMMAND),
        options=tuple(defaults.get("options", ())),
    )


def resolve(spec: str, environ: Mapping[str, str] | None = None) -> Host:
    """The host *spec* names: an ``ssh://`` URL, or a name in hosts.yaml (exit 4 if it is not there)."""
    if not isinstance(spec, str) or not spec:
        raise BadInput("a host must be ssh://[user@]host[:port] or a name from hosts.yaml")
    known = load(environ)
    if spec.startswith("ssh://"):
        return parse_url(spec, known.defaults)
    if spec in known.hosts:
        return known.hosts[spec]
    if not is_valid_name(spec):
        raise BadInput(f"invalid host {printable(spec)}: use ssh://[user@]host[:port] or a name from hosts.yaml")
    files = ", ".join(known.files) or " and ".join(paths(environ))
    raise NotFound(f"no host {spec!r} in {files} (or write ssh://{spec})")
