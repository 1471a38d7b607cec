"""Tiny kernel-module ELF files for the modinfo and depmod tests: a .modinfo section, a
.symtab/.strtab with exported (`__crc_<sym>`) and undefined symbols, and optionally
__ksymtab_strings and __versions, in either class and byte order. Nothing else of a
module is there: these are what libkmod reads."""

from __future__ import annotations

import struct
from collections.abc import Sequence

SHN_ABS = 0xFFF1
STB_GLOBAL, STB_WEAK = 1, 2


def build_module(
    modinfo: Sequence[str] = (),
    *,
    exports: Sequence[str] = (),
    undefined: Sequence[str] = (),
    ksymtab_strings: Sequence[str] | None = None,
    versions: Sequence[str] | None = None,
    is64: bool = True,
    little: bool = True,
    machine: int = 62,
    undefined_type: int = 0,
) -> bytes:
    """An ELF relocatable file with the sections libkmod reads: `exports` as __crc_
    symbols (defined, SHN_ABS), `undefined` as undefined global symbols, in that order."""
    order = "<" if little else ">"
    strtab = bytearray(b"\0")
    symbols = [(0, 0, 0)]  # (name offset, info, shndx): the null symbol first
    for name, shndx in [(f"__crc_{e}", SHN_ABS) for e in exports] + [(u, 0) for u in undefined]:
        kind = undefined_type if shndx == 0 else 0
        symbols.append((len(strtab), STB_GLOBAL << 4 | kind, shndx))
        strtab += name.encode() + b"\0"
    sym = struct.Struct(order + ("IBBHQQ" if is64 else "IIIBBH"))
    symtab = b"".join(
        sym.pack(n, info, 0, shndx, 0, 0) if is64 else sym.pack(n, 0, 0, info, 0, shndx)
        for n, info, shndx in symbols
    )
    sections: list[tuple[str, bytes]] = [
        (".modinfo", b"".join(s.encode() + b"\0" for s in modinfo)),
        (".strtab", bytes(strtab)),
        (".symtab", symtab),
    ]
    if ksymtab_strings is not None:
        sections.append(
            ("__ksymtab_strings", b"".join(s.encode() + b"\0" for s in ksymtab_strings))
        )
    if versions is not None:
        crc = 8 if is64 else 4
        sections.append(
            (
                "__versions",
                b"".join(b"\0" * crc + v.encode().ljust(64 - crc, b"\0") for v in versions),
            )
        )
    return elf_file(sections, is64=is64, little=little, machine=machine)


def elf_file(
    sections: Sequence[tuple[str, bytes]],
    *,
    is64: bool = True,
    little: bool = True,
    machine: int = 62,
) -> bytes:
    """An ELF header, the sections' contents, .shstrtab, then the section header table."""
    order = "<" if little else ">"
    ehdr = struct.Struct(order + ("16sHHIQQQIHHHHHH" if is64 else "16sHHIIIIIHHHHHH"))
    shdr = struct.Struct(order + ("IIQQQQIIQQ" if is64 else "IIIIIIIIII"))
    names = bytearray(b"\0")
    body = bytearray()
    headers = [shdr.pack(*([0] * 10))]
    for name, data in [*sections, (".shstrtab", b"")]:
        if name == ".shstrtab":
            name_offset = len(names)
            names += b".shstrtab\0"
            data = bytes(names)
        else:
            name_offset = len(names)
            names += name.encode() + b"\0"
        offset = ehdr.size + len(body)
        body += data
        headers.append(shdr.pack(name_offset, 1, 0, 0, offset, len(data), 0, 0, 1, 0))
    shoff = ehdr.size + len(body)
    ident = b"\x7fELF" + bytes([2 if is64 else 1, 1 if little else 2, 1]) + b"\0" * 9
    header = ehdr.pack(
        ident, 1, machine, 1, 0, 0, shoff, 0, ehdr.size, 0, 0, shdr.size,
        len(headers), len(headers) - 1,
    )  # fmt: skip
    return header + bytes(body) + b"".join(headers)
