"""Resource limits (and network modes) as configured: parsing and merging, nothing applied here.

Both come from three places, most specific last: the profile, image.yaml, and
the session's own options at begin (``--network``, ``--limit KEY=VALUE``)::

    network: none                # host (default) | none | loopback
    limits:
      memory: 4G                 # bytes, or with K/M/G/T (powers of 1024)
      swap: 1G                   # swap on top of memory (0: none)
      pids: 2048                 # processes and threads
      cpu-weight: 100            # 1-10000, relative to other sessions (cgroup v2 cpu.weight)
      cpu-quota: 1.5             # CPUs (1.5 = 150 % of one CPU), or "150%"
      io-weight: 100             # 1-10000 (needs the bfq I/O scheduler or io.cost)

A ``limits:`` mapping, even an empty one, gives the session a cgroup of its
own (``end`` kills through it, ``session info`` shows memory and CPU used);
without one, a session costs nothing extra. ``max`` removes a limit a less
specific place set. Imported by image.yaml and profile parsing when they set
limits: ``os``-free. The network's value is checked by
:func:`core.records.check_network`, which every begin has loaded already.
"""

from __future__ import annotations

from .errors import BadInput, ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at start-up
    from collections.abc import Iterable, Mapping
    from typing import Any

KEYS = ("memory", "swap", "pids", "cpu-weight", "cpu-quota", "io-weight")
#: A limit that removes whatever a less specific place set.
UNLIMITED = "max"
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(value: object, what: str) -> int:
    """Bytes from ``123``, ``512M``, ``4G``, ``1.5GiB`` (powers of 1024)."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = float(value)
        unit = ""
    elif isinstance(value, str):
        text = value.strip().upper().removesuffix("B").removesuffix("I")
        unit = text[-1:] if text[-1:] in _UNITS and text[-1:] != "" else ""
        try:
            number = float(text[: len(text) - len(unit)])
        except ValueError:
            raise ConfigError(f"{what} must be a size such as 512M or 4G, not {value[:40]!r}") from None
    else:
        raise ConfigError(f"{what} must be a size such as 512M or 4G")
    size = int(number * _UNITS[unit])
    if number < 0 or size > 1 << 60:
        raise ConfigError(f"{what} must be a size such as 512M or 4G, not {value!r}")
    return size


def _bounded_int(value: object, what: str, low: int, high: int) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(f"{what} must be a whole number from {low} to {high}")
    return value


def _cpus(value: object, what: str) -> float:
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            cpus = float(value.strip()[:-1]) / 100
        except ValueError:
            raise ConfigError(f"{what} must be a number of CPUs (1.5) or a percentage (150%)") from None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        cpus = float(value)
    elif isinstance(value, str):
        try:
            cpus = float(value)
        except ValueError:
            raise ConfigError(f"{what} must be a number of CPUs (1.5) or a percentage (150%)") from None
    else:
        raise ConfigError(f"{what} must be a number of CPUs (1.5) or a percentage (150%)")
    if not 0.01 <= cpus <= 4096:
        raise ConfigError(f"{what} must be between 0.01 and 4096 CPUs")
    return round(cpus, 4)


def parse_value(key: str, value: object, where: str) -> int | float | str:
    """One limit, normalised: bytes, counts, weights, CPUs, or ``max``."""
    what = f"{where}: limits.{key}"
    if key not in KEYS:
        raise ConfigError(f"{where}: unknown limit {key!r} (known: {', '.join(KEYS)})")
    if value == UNLIMITED:
        return UNLIMITED
    if key in ("memory", "swap"):
        size = parse_size(value, what)
        if key == "memory" and size < 4 << 20:
            raise ConfigError(f"{what} must be at least 4M")
        return size
    if key == "pids":
        return _bounded_int(value, what, 8, 4194304)
    if key == "cpu-quota":
        return _cpus(value, what)
    return _bounded_int(value, what, 1, 10000)


def parse_limits(data: Any, where: str) -> dict[str, int | float | str]:
    """A ``limits:`` mapping as written in image.yaml or a profile."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: limits must be a mapping of {', '.join(KEYS)}")
    return {str(k): parse_value(str(k), v, where) for k, v in data.items()}


def parse_options(options: Iterable[str]) -> dict[str, int | float | str]:
    """``--limit KEY=VALUE`` options (bad input: exit 2)."""
    out: dict[str, int | float | str] = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep:
            raise BadInput(f"--limit {option!r}: expected KEY=VALUE ({', '.join(KEYS)})")
        try:
            out[key] = parse_value(key, value, "--limit")
        except ConfigError as e:
            raise BadInput(str(e)) from None
    return out


def merge(*layers: Mapping[str, int | float | str] | None) -> dict[str, int | float] | None:
    """The limits a session gets: later layers win key by key, ``max`` removes; None when no layer has any."""
    if all(layer is None for layer in layers):
        return None
    out: dict[str, int | float | str] = {}
    for layer in layers:
        if layer:
            out.update(layer)
    return {k: v for k, v in out.items() if not isinstance(v, str)}


def describe(limits: Mapping[str, int | float] | None) -> str:
    """``memory 4.0 GiB, pids 2048`` for listings; ``-`` when the session has no cgroup."""
    if limits is None:
        return "-"
    if not limits:
        return "none (tracked)"
    from .units import human_size

    parts = []
    for key in KEYS:
        if key not in limits:
            continue
        value = limits[key]
        if key in ("memory", "swap"):
            parts.append(f"{key} {human_size(int(value))}")
        elif key == "cpu-quota":
            parts.append(f"{key} {value:g} CPU")
        else:
            parts.append(f"{key} {value}")
    return ", ".join(parts)
