"""PathDict (layers/pathtable.py), the tables flattening rebases below a symlink's path:
the keys it finds below a path are those a scan of a plain dict finds, in its order."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oci2vm.layers.pathtable import PathDict

# Paths over a few names, with '0' and '.' (either side of '/') and NUL among them.
PATHS = st.lists(st.sampled_from(["a", "b", "a0", "a.", "\0", "0"]), max_size=3).map(
    lambda parts: "/" + "/".join(parts)
)
OPS = st.lists(
    st.tuples(st.sampled_from(["set", "del", "pop", "setdefault", "update"]), PATHS),
    max_size=40,
)


def _apply(table: dict[str, int], op: str, key: str, value: int) -> None:
    if op == "set":
        table[key] = value
    elif op == "del" and key in table:
        del table[key]
    elif op == "pop":
        table.pop(key, None)
    elif op == "setdefault":
        table.setdefault(key, value)
    elif op == "update":
        table.update([(key, value)])


@given(ops=OPS, probe=PATHS)
def test_the_keys_below_a_path_are_a_scans_in_the_dicts_order(
    ops: list[tuple[str, str]], probe: str
) -> None:
    table: PathDict[str, int] = PathDict()
    plain: dict[str, int] = {}
    for value, (op, key) in enumerate(ops):
        _apply(table, op, key, value)
        _apply(plain, op, key, value)
    assert list(table.items()) == list(plain.items())
    base = probe.rstrip("/") + "/"
    assert table.below(probe) == [k for k in plain if k.startswith(base)]
    assert table.at_or_below(probe) == [k for k in plain if k == probe or k.startswith(probe + "/")]


def test_pairs_are_found_by_their_path() -> None:
    table: PathDict[tuple[str, int], str] = PathDict()
    for key in [("/a/b", 2), ("/a", 1), ("/a0", 3), ("/a/c", 0), ("/a/b", 1), ("/b/a", 1)]:
        table[key] = "x"
    assert table.below("/a") == [("/a/b", 2), ("/a/c", 0), ("/a/b", 1)]
    assert table.below("/") == list(table)
    del table[("/a/b", 2)]
    assert table.below("/a/") == [("/a/c", 0), ("/a/b", 1)]


def test_clearing_and_popping_keep_the_sorted_keys() -> None:
    table: PathDict[str, int] = PathDict([("/a/x", 1), ("/a/y", 2)])
    assert table.popitem() == ("/a/y", 2)
    assert table.below("/a") == ["/a/x"]
    table.clear()
    assert table.below("/a") == []
    table |= {"/a/z": 3}
    assert table.below("/a") == ["/a/z"]
    with pytest.raises(KeyError):
        table.pop("/a/x")
    with pytest.raises(TypeError):
        table.copy()
