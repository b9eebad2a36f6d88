"""Profiles: what a session gets from the host.

A profile is a YAML file: built-ins ship in ``core/profiles/`` (default,
minimal, sbuild, buildd); a file of the same name in the site directory
(``/etc/roost/profiles``) replaces a built-in, and new names add profiles::

    description: What sbuild needs
    dev: private                 # private: a fresh /dev with the usual nodes; host: bind host /dev
    mounts:
      - {type: bind, source: /var/lib/sbuild/build, target: /build, optional: true}
      - {type: tmpfs, target: /var/tmp, options: "size=1g"}
    copy-files: [/etc/resolv.conf, /etc/hosts]
    nss-databases: [passwd, shadow, group, gshadow]
    environment:
      keep: [DEB_BUILD_OPTIONS]  # passed from the caller when set
      set: {LANG: C.UTF-8}
    network: none                # host | none | loopback (image.yaml and --network win)
    limits: {memory: 8G, pids: 4096}

Every session also gets /proc, /sys (read-only), /dev, /dev/pts (its own
devpts instance) and /dev/shm (a tmpfs); profiles add to that.
"""

from __future__ import annotations

import os

from .errors import ConfigError, NotFound
from .names import check_name, is_valid_name
from .struct import Struct
from .yamlio import read_yaml

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing and collections cost milliseconds at start-up
    from typing import Any

BUILTIN_DIR = os.path.join(os.path.dirname(__file__), "profiles")
NSS_DATABASES = ("passwd", "shadow", "group", "gshadow", "services", "protocols", "networks", "hosts")
MOUNT_TYPES = ("bind", "rbind", "tmpfs")
ENV_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


class MountSpec(Struct, frozen=True):
    type: str
    target: str
    source: str | None = None
    options: str | None = None
    readonly: bool = False
    optional: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "source": self.source,
            "target": self.target,
            "options": self.options,
            "readonly": self.readonly,
            "optional": self.optional,
        }


class Profile(Struct, frozen=True):
    name: str
    path: str
    description: str = ""
    dev: str = "private"
    mounts: tuple[MountSpec, ...] = ()
    copy_files: tuple[str, ...] = ()
    nss_databases: tuple[str, ...] = ()
    env_keep: tuple[str, ...] = ()
    env_set: tuple[tuple[str, str], ...] = ()
    network: str | None = None
    limits: dict[str, Any] | None = None


def _abs_path(value: Any, where: str, what: str) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ConfigError(f"{where}: {what} must be an absolute path, not {str(value)[:80]!r}")
    if "\x00" in value or len(value) > 4096:
        raise ConfigError(f"{where}: {what} is too long or holds a NUL")
    parts = value.split("/")
    if ".." in parts:
        raise ConfigError(f"{where}: {what} {value!r} must not contain '..'")
    return os.path.normpath(value)


def parse_profile(name: str, data: Any, where: str) -> Profile:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping")
    known = {"description", "dev", "mounts", "copy-files", "nss-databases", "environment", "network", "limits"}
    for key in data:
        if key not in known:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(known))})")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ConfigError(f"{where}: description must be a string")
    dev = data.get("dev", "private")
    if dev not in ("private", "host"):
        raise ConfigError(f"{where}: dev must be 'private' or 'host'")
    mounts = []
    raw_mounts = data.get("mounts") or []
    if not isinstance(raw_mounts, list):
        raise ConfigError(f"{where}: mounts must be a list")
    for i, m in enumerate(raw_mounts):
        what = f"mounts[{i}]"
        if not isinstance(m, dict):
            raise ConfigError(f"{where}: {what} must be a mapping")
        for key in m:
            if key not in ("type", "source", "target", "options", "readonly", "optional"):
                raise ConfigError(f"{where}: {what} has unknown key {key!r}")
        kind = m.get("type", "bind")
        if kind not in MOUNT_TYPES:
            raise ConfigError(f"{where}: {what}.type must be one of {', '.join(MOUNT_TYPES)}")
        target = _abs_path(m.get("target"), where, f"{what}.target")
        if target == "/":
            raise ConfigError(f"{where}: {what}.target must not be /")
        source = None
        if kind in ("bind", "rbind"):
            source = _abs_path(m.get("source"), where, f"{what}.source")
        options = m.get("options")
        if options is not None and (not isinstance(options, str) or "\x00" in options or len(options) > 1024):
            raise ConfigError(f"{where}: {what}.options must be a short string")
        for flag in ("readonly", "optional"):
            if not isinstance(m.get(flag, False), bool):
                raise ConfigError(f"{where}: {what}.{flag} must be true or false")
        mounts.append(
            MountSpec(
                type=kind,
                target=target,
                source=source,
                options=options,
                readonly=m.get("readonly", False),
                optional=m.get("optional", False),
            )
        )
    copy_files = data.get("copy-files") or []
    if not isinstance(copy_files, list):
        raise ConfigError(f"{where}: copy-files must be a list")
    copies = tuple(_abs_path(p, where, "copy-files entry") for p in copy_files)
    nss = data.get("nss-databases") or []
    if not isinstance(nss, list) or not all(isinstance(d, str) and d in NSS_DATABASES for d in nss):
        raise ConfigError(f"{where}: nss-databases must be a list drawn from {', '.join(NSS_DATABASES)}")
    env = data.get("environment") or {}
    if not isinstance(env, dict) or set(env) - {"keep", "set"}:
        raise ConfigError(f"{where}: environment takes 'keep' (a list) and 'set' (a mapping)")
    keep = env.get("keep") or []
    if not isinstance(keep, list) or not all(_env_name(k) for k in keep):
        raise ConfigError(f"{where}: environment.keep must be a list of variable names")
    setv = env.get("set") or {}
    if not isinstance(setv, dict) or not all(
        _env_name(k) and isinstance(v, str) and "\x00" not in v for k, v in setv.items()
    ):
        raise ConfigError(f"{where}: environment.set must map variable names to strings")
    network = data.get("network")
    limits = None
    if network is not None or "limits" in data:
        from .limits import parse_limits
        from .records import check_network

        if network is not None:
            check_network(network, where)
        limits = parse_limits(data["limits"], where) if "limits" in data else None
    return Profile(
        name=name,
        path=where,
        description=description,
        dev=dev,
        mounts=tuple(mounts),
        copy_files=copies,
        nss_databases=tuple(dict.fromkeys(nss)),
        env_keep=tuple(keep),
        env_set=tuple(sorted(setv.items())),
        network=network,
        limits=limits,
    )


def _env_name(name: object) -> bool:
    return (
        isinstance(name, str)
        and 0 < len(name) <= 128
        and not name[0].isdigit()
        and all(c in ENV_NAME_CHARS for c in name)
    )


def profile_path(name: str, site_dir: str) -> str:
    check_name(name, "profile name")
    site = os.path.join(site_dir, name + ".yaml")
    if os.path.isfile(site):
        return site
    builtin = os.path.join(BUILTIN_DIR, name + ".yaml")
    if os.path.isfile(builtin):
        return builtin
    raise NotFound(f"no profile {name!r} (see roost profile list)")


def load_profile(name: str, site_dir: str, cache_dir: str | None = None) -> Profile:
    path = profile_path(name, site_dir)
    return parse_profile(name, read_yaml(path, cache_dir), path)


def profile_names(site_dir: str) -> list[str]:
    names = set()
    for directory in (BUILTIN_DIR, site_dir):
        try:
            for entry in os.listdir(directory):
                if entry.endswith(".yaml") and is_valid_name(entry[:-5]):
                    names.add(entry[:-5])
        except FileNotFoundError:
            continue
    return sorted(names)
