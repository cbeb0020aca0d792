"""A tiny name -> object registry.

One registry exists per extension point (tasks, attention variants, baselines, OOD settings,
figures). Adding an entry is a decorator in the module that defines it; looking up an unknown name
raises an error that lists the known names, so a typo in the config is reported with its fix.

Every entry's options follow one pattern: ``options`` (name -> default) and ``ranges`` (name ->
:class:`Range`), checked by :func:`resolve_options` (the classes through :class:`Configurable`)::

    @BASELINES.register("knn")
    class NearestNeighbours(Baseline):
        options = {"k": 3, "max_prompts": None}
        ranges = {"k": at_least(1), "max_prompts": at_least(1)}  # null or an integer >= 1
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Range:
    """Bounds on a numeric option: ``low <= value <= high`` (strict where ``open_low`` or
    ``open_high``; a missing bound is no bound). ``unit`` follows the interval in messages.

    An option's type comes from its default (see :func:`resolve_options`); for an option whose
    default is None (null: "unset") it comes from the bounds: integer bounds, an integer."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    unit: str = ""

    @property
    def integer(self) -> bool:
        bounds = [b for b in (self.low, self.high) if b is not None]
        return all(isinstance(b, int) and not isinstance(b, bool) for b in bounds)

    def contains(self, value: float) -> bool:
        low, high = self.low, self.high
        return ((low is None or value > low or (value == low and not self.open_low))
                and (high is None or value < high or (value == high and not self.open_high)))

    def __str__(self) -> str:
        if self.high is None:  # one-sided: ">= 1", "> 0"
            return f"{'>' if self.open_low else '>='} {self.low}{self.unit}"
        if self.low is None:
            return f"{'<' if self.open_high else '<='} {self.high}{self.unit}"
        return (f"in {'(' if self.open_low else '['}{self.low}, {self.high}"
                f"{')' if self.open_high else ']'}{self.unit}")


def at_least(low: float) -> Range:
    """``value >= low`` (an integer where ``low`` is one and the default is None)."""
    return Range(low=low)


def above(low: float) -> Range:
    """``value > low``."""
    return Range(low=low, open_low=True)


def _kind(default: Any, bounds: Range | None) -> type | None:
    """The type an option's values must have: its default's, or for a None default the
    bounds' (None: anything)."""
    if default is None:
        return None if bounds is None else (int if bounds.integer else float)
    for kind in (bool, int, float, str):  # bool first: a bool is an int to isinstance
        if isinstance(default, kind):
            return kind
    return None


def _has_kind(value: Any, kind: type) -> bool:
    if kind is bool or kind is str:
        return isinstance(value, kind)
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        return False
    return kind is int or math.isfinite(value)


_KIND_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def resolve_options(defaults: Mapping[str, Any], given: Mapping[str, Any],
                    ranges: Mapping[str, Range] | None = None) -> dict[str, Any]:
    """``defaults`` updated with ``given``, after checking ``given``: every name is one of
    ``defaults`` (else a ``ValueError`` lists the known ones), and every value has its default's
    type (an integer where the default is one, not a bool; a finite number, integer or not,
    where it is a float; true/false; a string) and lies in its :class:`Range` in ``ranges``. An
    option whose default is None (null) also takes null, and otherwise the type its bounds give
    (anything if it has none). The registries' one options pattern: each entry declares
    ``options`` (name -> default) and ``ranges`` (name -> :class:`Range`)."""
    unknown = set(given) - set(defaults)
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)}; known are: {sorted(defaults)}")
    ranges = ranges or {}
    for key, value in given.items():
        default, bounds = defaults[key], ranges.get(key)
        kind = _kind(default, bounds)
        if kind is None or (default is None and value is None):
            continue
        if not _has_kind(value, kind) or (bounds is not None and not bounds.contains(value)):
            rule = _KIND_NAMES[kind] if bounds is None else f"{_KIND_NAMES[kind]} {bounds}"
            raise ValueError(f"{key} must be {rule}, got {value!r}")
    return {**defaults, **given}


def check_declaration(defaults: Mapping[str, Any], ranges: Mapping[str, Range],
                      owner: str) -> None:
    """Raise ``TypeError`` where ``ranges`` names an option ``defaults`` lacks or a default lies
    outside its range (a mistake in the entry's code, caught when its class is defined)."""
    stray = sorted(set(ranges) - set(defaults))
    if stray:
        raise TypeError(f"{owner}: ranges for unknown option(s) {stray}")
    try:
        resolve_options(defaults, defaults, ranges)
    except ValueError as err:
        raise TypeError(f"{owner}: a default is invalid: {err}") from None


class Configurable:
    """A registry entry's options: ``options`` (name -> default; the config may set only these)
    and ``ranges`` (name -> :class:`Range`), checked by :func:`resolve_options`."""

    #: option name -> default; a given value must have the default's type
    options: ClassVar[Mapping[str, Any]] = {}
    #: option name -> the range its values must lie in (options not named: any value of the type)
    ranges: ClassVar[Mapping[str, Range]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        check_declaration(cls.option_defaults(), cls.ranges, cls.__qualname__)

    @classmethod
    def option_defaults(cls) -> Mapping[str, Any]:
        """Every option the entry takes with its default: ``options`` unless a base adds some."""
        return cls.options

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """Raise ``ValueError`` for options the entry cannot take; return them with the
        defaults of the rest."""
        return resolve_options(cls.option_defaults(), options, cls.ranges)


class UnknownNameError(KeyError):
    """Raised for a name that is not registered; the message lists the known names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class Registry(Generic[T]):
    """Maps names to objects; duplicate registration is an error."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@REGISTRY.register("name")``."""

        def decorate(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return decorate

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; known are: {', '.join(sorted(self._entries))}"
            ) from None

    def check(self, names: object, where: str) -> None:
        """Raise if any of ``names`` is unknown, naming the config key ``where``."""
        for name in names:  # type: ignore[attr-defined]
            if name not in self._entries:
                raise UnknownNameError(
                    f"{where}: unknown {self.kind} {name!r}; known are: "
                    f"{', '.join(sorted(self._entries))}"
                )

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))


def import_modules(package: str, path: Iterable[str], skip: Iterable[str] = ()) -> None:
    """Import every public module of ``package`` (its ``__name__`` and ``__path__``), in name
    order, except ``skip``: importing one registers its entries, so adding an entry is its module
    plus a config line. Modules whose name starts with ``_`` are the package's own helpers."""
    import importlib
    import pkgutil

    skipped = set(skip)
    for module in pkgutil.iter_modules(list(path)):
        if not module.name.startswith("_") and module.name not in skipped:
            importlib.import_module(f"{package}.{module.name}")
