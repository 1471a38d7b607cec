"""A reader of kmod's binary index (modules.*.bin), written from libkmod-index.c's
description of the format, for the tests to look keys up in what oci2vm writes: the whole
trie as {key: [(priority, value), ...]}, values in file order."""

from __future__ import annotations

import struct

MAGIC = 0xB007F457
VERSION = 0x00020001
PREFIX, VALUES, CHILDS, MASK = 0x80000000, 0x40000000, 0x20000000, 0x0FFFFFFF


def read_index(data: bytes) -> dict[str, list[tuple[int, str]]]:
    magic, version, root = struct.unpack_from(">III", data)
    assert (magic, version) == (MAGIC, VERSION), (hex(magic), hex(version))
    out: dict[str, list[tuple[int, str]]] = {}
    if root:
        _walk(data, root, "", out)
    return out


def _cstring(data: bytes, pos: int) -> tuple[str, int]:
    end = data.index(b"\0", pos)
    return data[pos:end].decode("ascii"), end + 1


def _walk(data: bytes, offset: int, path: str, out: dict[str, list[tuple[int, str]]]) -> None:
    pos = offset & MASK
    if offset & PREFIX:
        prefix, pos = _cstring(data, pos)
        path += prefix
    if offset & CHILDS:
        first, last = data[pos], data[pos + 1]
        children = struct.unpack_from(f">{last - first + 1}I", data, pos + 2)
        pos += 2 + 4 * len(children)
        for char, child in zip(range(first, last + 1), children, strict=True):
            if child:
                _walk(data, child, path + chr(char), out)
    if offset & VALUES:
        (count,) = struct.unpack_from(">I", data, pos)
        pos += 4
        values = []
        for _ in range(count):
            (priority,) = struct.unpack_from(">I", data, pos)
            value, pos = _cstring(data, pos + 4)
            values.append((priority, value))
        out[path] = values
