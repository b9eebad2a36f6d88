"""image.yaml: what an operator may edit about an image.

::

    backend: overlay            # overlay | dir | btrfs | zfs | squashfs | erofs
    description: Debian bookworm for amd64 builds
    profile: sbuild             # which profile sessions get
    users: [alice]              # may begin sessions and run commands as themselves
    groups: [sbuild]
    root-users: [alice]         # may also run as root and manage others' sessions
    root-groups: []
    aliases: [bookworm]         # other names the schroot front door accepts
    retention: 5                # generations image gc keeps (overrides roost.yaml)
    overlay-max-depth: 16       # layers before a promote flattens
    personality: linux          # passed to the command (schroot's personality)
    command-prefix: []          # prepended to every command (schroot's command-prefix)
    network: none               # host | none | loopback (ordinary sessions; see core.limits)
    limits: {memory: 4G, pids: 2048}
    architecture: arm64         # Debian architecture of the tree (found at image create)
    suite: bookworm             # what mmdebstrap bootstrapped (the schroot door's sbuild names)
    durable: false              # true: ordinary sessions sync their writes too (maintenance ones always do)
    package-cache: true         # false: sessions do not share downloaded .debs (core/pkgcache.py)
    publish:                    # written again after every promote (core/publish.py)
      sbuild-tarball:           # the tarball sbuild's unshare mode reads
        directory: /srv/roost/sbuild   # root's, writable by nobody else
        name: bookworm-amd64    # default: SUITE-ARCH of the generation
        compression: zstd       # zstd, gzip, xz or none

Parsed once into a frozen :class:`ImageConfig`; an unknown key, a wrong type
or a bad name is one :class:`ConfigError` line naming the file.
"""

from __future__ import annotations

import os

from .backends import NAMES as BACKENDS
from .errors import ConfigError
from .names import is_valid_name
from .struct import Struct

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing and collections cost milliseconds at start-up
    from typing import Any

PERSONALITIES = ("linux", "linux32", "linux64", "undefined")
#: Debian architectures roost knows (core.binfmt has how to run each).
ARCHITECTURES = (
    "amd64", "i386", "arm64", "armhf", "armel", "riscv64", "ppc64el", "ppc64", "s390x", "mips64el", "mipsel",
    "loong64", "alpha", "hppa", "m68k", "sh4", "sparc64",
)  # fmt: skip
#: compressions of a published sbuild tarball (core/publish.py)
TARBALL_COMPRESSIONS = ("zstd", "gzip", "xz", "none")


class SbuildTarball(Struct, frozen=True):
    """``publish: sbuild-tarball:``: where (and as what) every promote writes the tarball sbuild unpacks."""

    directory: str
    name: str | None = None
    compression: str = "zstd"

    def to_yaml_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"directory": self.directory}
        if self.name is not None:
            out["name"] = self.name
        out["compression"] = self.compression
        return out


class ImageConfig(Struct, frozen=True):
    backend: str = "overlay"
    description: str = ""
    profile: str = "default"
    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    root_users: tuple[str, ...] = ()
    root_groups: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    retention: int | None = None
    overlay_max_depth: int | None = None
    personality: str | None = None
    command_prefix: tuple[str, ...] = ()
    network: str | None = None
    limits: dict[str, Any] | None = None
    architecture: str | None = None
    suite: str | None = None
    durable: bool | None = None
    package_cache: bool | None = None
    publish: SbuildTarball | None = None

    def access_lists(self) -> dict[str, list[str]]:
        """The access lists, as the policy and session records take them."""
        return {
            "users": list(self.users),
            "groups": list(self.groups),
            "root_users": list(self.root_users),
            "root_groups": list(self.root_groups),
        }

    def to_yaml_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self._fields:
            value = getattr(self, name)
            if value is None or (value == () and name not in ("users", "root_users")):
                continue
            if isinstance(value, SbuildTarball):
                out[name] = {"sbuild-tarball": value.to_yaml_dict()}
                continue
            out[name.replace("_", "-")] = list(value) if isinstance(value, tuple) else value
        return out


_LIST_KEYS = ("users", "groups", "root-users", "root-groups", "aliases", "command-prefix")


def parse_image_config(data: Any, where: str, backends: tuple[str, ...] = BACKENDS) -> ImageConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    known = {name.replace("_", "-") for name in ImageConfig._fields}
    values: dict[str, Any] = {}
    for key, value in data.items():
        if not isinstance(key, str) or key not in known:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(known))})")
        attr = key.replace("-", "_")
        if key in _LIST_KEYS:
            if value is None:
                value = []
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{where}: {key} must be a list of strings")
            if key != "command-prefix":
                for v in value:
                    if not is_valid_name(v):
                        raise ConfigError(f"{where}: {key} holds an invalid name {v[:64]!r}")
            if len(value) > 1000:
                raise ConfigError(f"{where}: {key} is too long")
            values[attr] = tuple(value)
        elif key == "limits":
            from .limits import parse_limits

            values[attr] = parse_limits(value, where)
        elif key == "publish":
            values[attr] = _parse_publish(value, where)
        elif key in ("durable", "package-cache"):
            if value is not None and not isinstance(value, bool):
                raise ConfigError(f"{where}: {key} must be true or false")
            values[attr] = value
        elif key in ("retention", "overlay-max-depth"):
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 1000:
                raise ConfigError(f"{where}: {key} must be a number from 1 to 1000")
            values[attr] = value
        else:
            if not isinstance(value, str):
                raise ConfigError(f"{where}: {key} must be a string")
            if len(value) > 4096 or "\x00" in value:
                raise ConfigError(f"{where}: {key} is too long or holds a NUL")
            values[attr] = value
    config = ImageConfig(**values)
    if config.backend not in backends:
        raise ConfigError(f"{where}: unknown backend {config.backend!r} (known: {', '.join(backends)})")
    if not is_valid_name(config.profile):
        raise ConfigError(f"{where}: invalid profile name {config.profile[:64]!r}")
    if config.personality is not None and config.personality not in PERSONALITIES:
        raise ConfigError(f"{where}: personality must be one of {', '.join(PERSONALITIES)}")
    _check_isolation(config, where)
    return config


def _check_isolation(config: ImageConfig, where: str) -> None:
    if config.network is not None:
        from .records import check_network

        check_network(config.network, where)
    if config.architecture is not None and config.architecture not in ARCHITECTURES:
        raise ConfigError(f"{where}: unknown architecture {config.architecture[:40]!r}")
    if config.suite is not None and not is_valid_name(config.suite):
        raise ConfigError(f"{where}: invalid suite {config.suite[:64]!r}")


def _parse_publish(value: Any, where: str) -> SbuildTarball | None:
    """``publish:``: one entry today, ``sbuild-tarball`` (a directory, or a mapping of its settings)."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - {"sbuild-tarball"}:
        raise ConfigError(f"{where}: publish must be a mapping with the key sbuild-tarball")
    spec = value.get("sbuild-tarball")
    if spec is None:
        return None
    if isinstance(spec, str):
        spec = {"directory": spec}
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: publish: sbuild-tarball must be a directory or a mapping")
    unknown = set(spec) - {"directory", "name", "compression"}
    if unknown:
        raise ConfigError(f"{where}: publish: sbuild-tarball: unknown key {sorted(map(str, unknown))[0]!r}")
    directory = spec.get("directory")
    if not isinstance(directory, str) or not directory.startswith("/") or "\x00" in directory or len(directory) > 4096:
        raise ConfigError(f"{where}: publish: sbuild-tarball: directory must be an absolute path")
    name = spec.get("name")
    if name is not None and not is_valid_name(name):
        raise ConfigError(f"{where}: publish: sbuild-tarball: invalid name {str(name)[:64]!r}")
    compression = spec.get("compression", "zstd")
    if compression not in TARBALL_COMPRESSIONS:
        raise ConfigError(
            f"{where}: publish: sbuild-tarball: compression must be one of {', '.join(TARBALL_COMPRESSIONS)}"
        )
    return SbuildTarball(directory=os.path.normpath(directory), name=name, compression=compression)
