"""A tiny name -> object registry.

One registry exists per extension point (tasks, attention variants, baselines, figures). Adding an
entry is a decorator in the module that defines it; looking up an unknown name raises an error that
lists the known names, so a typo in the config is reported with its fix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


def check_options(given: Iterable[str], known: Iterable[str]) -> None:
    """Raise ``ValueError`` listing any option in ``given`` that is not in ``known``."""
    unknown, known = set(given) - set(known), sorted(known)
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)}; known are: {known}")


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
