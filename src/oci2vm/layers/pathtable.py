"""Tables keyed by path that find the keys below a directory without a scan.

Flattening moves what upper layers wrote below a lower layer's symlink to where it
leads, once per such symlink, rebasing the keys below it in each of its path tables: a
scan of a whole table each time made that quadratic in the entries (crafted layers with
thousands of such symlinks took minutes). A PathDict is a dict (its reads are a dict's)
that keeps its keys sorted too: the keys below a directory are one range of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Generic, NoReturn, TypeVar

from sortedcontainers import SortedList

K = TypeVar("K", bound=str | tuple[str, int])
V = TypeVar("V")


def _after(prefix: str) -> str:
    """The first string after all those that start with `prefix` (not empty)."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


class PathDict(dict[K, V], Generic[K, V]):
    """A dict keyed by absolute paths, or by pairs whose first item is one (ordered by
    it), that lists the keys below a path. Every mutator keeps the sorted keys along; the
    keys found come in the dict's own order (its insertion order), as a scan of it gives
    them: where a caller's outcome depends on that order, it stays the same."""

    __slots__ = ("_order", "_seq", "_sorted")

    def __init__(self, items: Iterable[tuple[K, V]] = ()) -> None:
        super().__init__()
        self._sorted: SortedList[Any] = SortedList()
        self._order: dict[K, int] = {}  # key -> when it was inserted (its place in the dict)
        self._seq = 0
        self.update(items)

    # --- queries ------------------------------------------------------------------

    def starting(self, prefix: str) -> list[K]:
        """The keys (or keys' paths) that start with `prefix`, in the dict's order."""
        if not self or not prefix:  # (most tables are empty most of the time)
            return list(self)
        low, high = prefix, _after(prefix)
        if self._sorted and isinstance(self._sorted[0], tuple):
            bounds: tuple[Any, Any] = ((low,), (high,))
        else:
            bounds = (low, high)
        found: list[K] = list(self._sorted.irange(*bounds, inclusive=(True, False)))
        if len(found) > 1:
            found.sort(key=self._order.__getitem__)
        return found

    def below(self, path: str) -> list[K]:
        """The keys strictly below directory `path` (their path, for pairs)."""
        return self.starting(path.rstrip("/") + "/")

    def at_or_below(self, path: str) -> list[K]:
        """The key `path` (a path key), if there is one, and those that start with
        `path` + '/', in the dict's order."""
        found = self.starting(path + "/")
        if path in self:
            found.append(path)  # type: ignore[arg-type]  # (str keys only)
            found.sort(key=self._order.__getitem__)
        return found

    # --- mutators: each keeps the sorted keys -----------------------------------------

    def __setitem__(self, key: K, value: V) -> None:
        if key not in self:
            self._sorted.add(key)
            self._order[key] = self._seq
            self._seq += 1
        super().__setitem__(key, value)

    def __delitem__(self, key: K) -> None:
        super().__delitem__(key)
        self._drop(key)

    def _drop(self, key: K) -> None:
        self._sorted.remove(key)
        del self._order[key]

    _MISSING: Any = object()

    def pop(self, key: K, default: Any = _MISSING) -> Any:
        if key in self:
            value = super().pop(key)
            self._drop(key)
            return value
        if default is PathDict._MISSING:
            raise KeyError(key)
        return default

    def popitem(self) -> tuple[K, V]:
        key, value = super().popitem()
        self._drop(key)
        return key, value

    def setdefault(self, key: K, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def clear(self) -> None:
        super().clear()
        self._sorted.clear()
        self._order.clear()

    def update(self, *args: Any, **kwargs: Any) -> None:
        if kwargs:
            raise TypeError("PathDict.update: keyword keys are not paths")
        for source in args:
            pairs = source.items() if hasattr(source, "items") else source
            for key, value in pairs:
                self[key] = value

    def __ior__(self, other: Any) -> PathDict[K, V]:  # type: ignore[override,misc]
        self.update(other)
        return self

    def copy(self) -> NoReturn:
        raise TypeError("PathDict.copy: not supported")

    def __reduce__(self) -> NoReturn:
        raise TypeError("PathDict: not picklable")
