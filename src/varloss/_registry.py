"""`Registry`: name -> object, with the one duplicate policy and the one lookup sentence that
every varloss registry shares (model families, likelihoods, samplers, correction methods,
feature extractors, model adapters, file readers, data-set sources, the data-set catalogue,
study executors, report kinds).

    FAMILIES = Registry("model family")
    FAMILIES.register("dense", DenseVAE)             # a name taken by another object: InputError
    FAMILIES.register("dense", MyDense, replace=True)  # ... unless replace=True
    FAMILIES["densee"]   # InputError: unknown model family 'densee'; known: dense.

The duplicate policy: a name holds one object. Registering another object under a taken name is
refused in one sentence unless `replace=True`. Registering the very same object again is a no-op,
and so is the same definition imported again (a class or function of the same module and
qualified name, not a lambda or local: a plugin file imported twice), which then takes the name:
the newest wins.

A registry reads like a read-only dict (`in`, `[]`, `get`, iteration in registration order,
`len`, `items()`); it changes only through `register` and `unregister`. Ground layer: it imports
only `varloss.errors`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from varloss.errors import InputError

T = TypeVar("T")

__all__ = ["Registry"]


def _same_definition(old: Any, new: Any) -> bool:
    """Whether `new` is `old` or the same definition imported again (same module and name)."""
    if new is old:
        return True
    names = [(getattr(o, "__module__", None), getattr(o, "__qualname__", None)) for o in (old, new)]
    # A lambda or a function defined inside another has no name that tells definitions apart.
    if None in names[0] or "<" in names[0][1]:
        return False
    return type(old) is type(new) and names[0] == names[1]


class Registry(Mapping[str, T], Generic[T]):
    """Objects by name, in registration order. `what` names one entry in messages ("model
    family"); `hint` (optional, no final full stop) ends the unknown-name sentence with what
    else the user may do."""

    def __init__(self, what: str, *, hint: str = "") -> None:
        self.what = what
        self.hint = hint
        self._entries: dict[str, T] = {}

    def __repr__(self) -> str:
        return f"Registry({self.what!r}: {', '.join(self._entries)})"

    def register(self, name: str, obj: T, *, replace: bool = False) -> T:
        """Give `name` to `obj` and return `obj`. A name another object holds is refused (an
        InputError) unless `replace`; the same object (or definition) again is a no-op."""
        return self.register_all([name], obj, replace=replace)

    def register_all(self, names: Iterable[str], obj: T, *, replace: bool = False) -> T:
        """Give every one of `names` to `obj` (e.g. the suffixes of one file reader), or none of
        them: all are checked before any is registered."""
        names = list(names)
        for name in names:
            if not isinstance(name, str) or not name:
                raise InputError(f"a {self.what} name must be a non-empty string, got {name!r}.")
            old = self._entries.get(name)
            if old is not None and not replace and not _same_definition(old, obj):
                raise InputError(
                    f"{self.what} {name!r} is already registered ({_describe(old)}); pass "
                    "replace=True to replace it."
                )
        for name in names:
            self._entries[name] = obj
        return obj

    def unregister(self, name: str) -> T:
        """Remove `name` and return what it held (an unknown name is the lookup's InputError)."""
        obj = self[name]
        del self._entries[name]
        return obj

    def names(self) -> list[str]:
        """The registered names, in registration order."""
        return list(self._entries)

    def unknown(self, name: object) -> InputError:
        """The one sentence for a name not registered: the name, the known names, the hint."""
        known = ", ".join(self._entries) or "none"
        hint = f"; {self.hint}" if self.hint else ""
        return InputError(f"unknown {self.what} {name!r}; known: {known}{hint}.")

    # ---- the read-only dict interface ----

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except (KeyError, TypeError):  # TypeError: an unhashable name
            raise self.unknown(name) from None

    def __contains__(self, name: object) -> bool:
        try:
            return name in self._entries
        except TypeError:
            return False

    def get(self, name: str, default: Any = None) -> Any:
        return self._entries.get(name, default) if name in self else default

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


def _describe(obj: Any) -> str:
    """`module.Name` of a class or function, else its repr (for the duplicate sentence)."""
    qualname = getattr(obj, "__qualname__", None)
    module = getattr(obj, "__module__", None)
    if qualname and module:
        return f"{module}.{qualname}"
    return repr(obj)
