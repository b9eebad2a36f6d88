"""Plain record classes without ``dataclasses``.

``import dataclasses`` pulls in ``inspect``, ``ast``, ``dis`` and ``tokenize``:
about 5 ms on every command, more than a whole ``session run``. The engine's
records need much less: keyword construction with defaults, equality, a
readable repr, conversion to JSON-ready dicts, and (optionally) immutability.
:class:`Struct` gives exactly that, reading the fields from the class's
annotations; type checkers treat subclasses as dataclasses
(``dataclass_transform``).

Defaults that are lists or dicts are copied for each instance, so a mutable
default is never shared.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, dataclass_transform
else:

    def dataclass_transform(**kwargs):
        return lambda cls: cls


_MISSING = object()


@dataclass_transform()
class Struct:
    """Base of record classes: ``class Point(Struct): x: int; y: int = 0``.

    Subclasses may pass ``frozen=True`` (``class P(Struct, frozen=True)``).
    """

    __slots__ = ()
    _fields: tuple[str, ...] = ()
    _defaults: dict[str, Any] = {}
    _frozen = False

    def __init_subclass__(cls, frozen: bool = False, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        fields: list[str] = []
        defaults: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            for name in klass.__dict__.get("__annotations__", {}):  # noqa: RUF063 - inspect costs ms
                if name.startswith("_"):
                    continue
                if name not in fields:
                    fields.append(name)
                if name in klass.__dict__:
                    defaults[name] = klass.__dict__[name]
        cls._fields = tuple(fields)
        cls._defaults = defaults
        cls._frozen = frozen or cls._frozen
        for name in fields:  # class attributes would shadow nothing, but keep the class clean
            if name in cls.__dict__:
                delattr(cls, name)

    def __init__(self, *args: Any, **values: Any) -> None:
        if args:
            if len(args) > len(self._fields):
                raise TypeError(f"{type(self).__name__} takes at most {len(self._fields)} values")
            for name, value in zip(self._fields, args, strict=False):
                if name in values:
                    raise TypeError(f"{type(self).__name__} got {name!r} twice")
                values[name] = value
        unknown = set(values) - set(self._fields)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field {sorted(unknown)[0]!r}")
        for name in self._fields:
            value = values.get(name, _MISSING)
            if value is _MISSING:
                value = self._defaults.get(name, _MISSING)
                if value is _MISSING:
                    raise TypeError(f"{type(self).__name__} needs {name!r}")
                if type(value) in (list, dict):
                    value = type(value)(value)
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        if self._frozen:
            raise AttributeError(f"{type(self).__name__} is immutable")
        object.__setattr__(self, name, value)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self._fields)

    def __hash__(self) -> int:
        if not self._frozen:
            raise TypeError(f"unhashable type: {type(self).__name__}")
        return hash(tuple(getattr(self, n) for n in self._fields))

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._fields)
        return f"{type(self).__name__}({inner})"

    def replace(self, **changes: Any) -> Any:
        values = {n: getattr(self, n) for n in self._fields}
        values.update(changes)
        return type(self)(**values)

    def as_dict(self) -> dict[str, Any]:
        """Fields as a dict, recursively (nested structs, lists and tuples become JSON-ready)."""
        return {n: _plain(getattr(self, n)) for n in self._fields}


def _plain(value: Any) -> Any:
    if isinstance(value, Struct):
        return value.as_dict()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
