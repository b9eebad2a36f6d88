"""YAML in and out, for the files people edit (roost.yaml, image.yaml, profiles).

Machine state is JSON; YAML is only read where a person may have written it,
and every parse error becomes one :class:`ConfigError` line naming the file.

PyYAML takes about 10 ms to import, more than most roost commands take to
run. So a parsed file is remembered as JSON in the runtime root's cache
directory (root's, mode 0700), keyed by the file's inode, size and
modification and change times: like a ``.pyc``, the cache is rebuilt
whenever the file changes, and a reader never sees a stale value.
"""

from __future__ import annotations

import os

from . import fastjson
from .errors import ConfigError, RoostError

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at start-up
    from typing import Any

MAX_BYTES = 1 << 20


def parse_yaml(text: str, where: str, *, loader: Any = None, error: type[RoostError] = ConfigError) -> Any:
    """The YAML document in *text* (read from *where*); malformed YAML raises *error* in one line.

    *loader* defaults to PyYAML's safe loader (its C one when built).
    """
    import yaml

    if loader is None:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return yaml.load(text, Loader=loader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        line = f" line {mark.line + 1}:" if mark is not None else ""
        raise error(f"{where}:{line} {e.problem or 'malformed YAML'}") from None
    except yaml.YAMLError as e:
        raise error(f"{where}: malformed YAML ({str(e).splitlines()[0]})") from None
    except RecursionError:
        raise error(f"{where}: nested too deeply") from None


def _cache_path(cache_dir: str, path: str) -> str:
    return os.path.join(cache_dir, path.replace("%", "%25").replace("/", "%2F")[-200:] + ".json")


def read_yaml(path: str, cache_dir: str | None = None) -> Any:
    """Parse the YAML file at *path* (bounded in size, UTF-8 only), through the cache if given."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror}") from None
    key = [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
    cached = _cache_path(cache_dir, path) if cache_dir else None
    if cached is not None:
        try:
            with open(cached, encoding="utf-8") as f:
                entry = fastjson.loads(f.read())
            if entry.get("path") == path and entry.get("key") == key:
                return entry["value"]
        except (OSError, ValueError, AttributeError, KeyError):
            pass
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror}") from None
    if len(raw) > MAX_BYTES:
        raise ConfigError(f"{path}: larger than 1 MiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid UTF-8") from None
    value = parse_yaml(text, path)
    if cached is not None and _mine(cache_dir):
        try:
            from .fsutil import atomic_write

            atomic_write(cached, fastjson.dumps({"path": path, "key": key, "value": value}), mode=0o600)
        except (OSError, TypeError, ValueError):
            pass  # a value JSON cannot hold (a YAML date, say) is simply not cached
    return value


def _mine(directory: str | None) -> bool:
    """Whether this process may fill *directory* as a cache: root's, or the rootless user's own (0700)."""
    if os.geteuid() == 0:
        return True
    try:
        st = os.lstat(directory) if directory else None
    except OSError:
        return False
    return st is not None and st.st_uid == os.geteuid() and not st.st_mode & 0o077


def dump_yaml(data: Any) -> str:
    import yaml

    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    text: str = yaml.dump(data, Dumper=dumper, sort_keys=False, default_flow_style=False, allow_unicode=True)
    return text
