"""What depmod reads from one kernel module: the key=value strings of its .modinfo
section, the symbols it exports and the symbols it needs, taken from the ELF file the way
kmod's libkmod-elf.c takes them (kmod 30, as in Debian 12, and 34 read them alike).

A module is read from memory (it arrives as a tar member's bytes, possibly xz, zstd or
gzip compressed), and only the section headers and three or four sections are looked at,
so a few struct.unpack_from calls do what an ELF library (pyelftools, lief) would, without
a dependency. Every offset is checked against the data: a hostile or truncated module is
an Oci2vmError, never an IndexError or struct.error."""

from __future__ import annotations

import lzma
import re
import struct
import sys
import zlib
from dataclasses import dataclass

from oci2vm.errors import Oci2vmError

MAX_MODULE = 256 << 20  # decompressed; Debian's largest module (amdgpu) is ~20 MiB
ELF_MAGIC = b"\x7fELF"
EI_CLASS, EI_DATA = 4, 5
ELFCLASS32, ELFCLASS64 = 1, 2
ELFDATA2LSB, ELFDATA2MSB = 1, 2
SHN_UNDEF = 0
# __versions entries: struct modversion_info { unsigned long crc; char name[64 - crc]; }
MODVERSION_SIZE = 64
CRC_PREFIX = "__crc_"
EM_SPARC, EM_SPARCV9 = 2, 43
STT_REGISTER = 13  # sparc: "undefined" global register symbols kmod passes over


@dataclass(frozen=True, slots=True)
class ModInfo:
    """One module as depmod sees it. Strings are decoded UTF-8 with undecodable bytes
    kept as surrogates, so that writing them back gives the module's bytes.

    `exports` are kmod's reading of the exported symbols (the `__crc_<sym>` symbols of
    .symtab, else the strings of __ksymtab_strings); `needs` are the undefined symbols of
    .symtab in table order, then the __versions names matched by none of them, which is
    the list depmod resolves against every module's exports to find the dependencies."""

    name: str = ""
    depends: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    softdeps: tuple[str, ...] = ()
    weakdeps: tuple[str, ...] = ()
    firmware: tuple[str, ...] = ()
    vermagic: str = ""
    exports: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()


def module_name(path: str) -> str:
    """kmod's path_to_modname: the file name up to its first '.', '-' read as '_'."""
    base = path.rsplit("/", 1)[-1]
    return base.split(".", 1)[0].replace("-", "_")


def uncompressed_name(name: str) -> str:
    """A module file's name once decompressed: ext4.ko.xz -> ext4.ko (an initramfs holds
    the ELF bytes, which insmod and the kernel read by that name's suffix)."""
    for suffix in (".xz", ".zst", ".gz"):
        if name.endswith(".ko" + suffix):
            return name.removesuffix(suffix)
    return name


def decompress_module(name: str, data: bytes) -> bytes:
    """The ELF bytes of module file `name` (.ko, .ko.xz, .ko.zst or .ko.gz), at most
    MAX_MODULE bytes once inflated."""
    try:
        if name.endswith(".ko"):
            out = data
        elif name.endswith(".ko.xz"):
            out = _unxz(data)
        elif name.endswith(".ko.zst"):
            out = _unzstd(name, data)
        elif name.endswith(".ko.gz"):
            out = _gunzip(data)
        else:
            raise Oci2vmError(f"{name}: not a kernel module (.ko, .ko.xz, .ko.zst, .ko.gz)")
    except (lzma.LZMAError, zlib.error, EOFError) as e:
        raise Oci2vmError(f"{name}: corrupt compressed module: {e}") from None
    except Exception as e:  # zstandard.ZstdError, whose module is imported lazily
        if type(e).__name__ != "ZstdError":
            raise
        raise Oci2vmError(f"{name}: corrupt compressed module: {e}") from None
    if len(out) > MAX_MODULE:
        raise _too_large(name)
    return out


def _too_large(name: str) -> Oci2vmError:
    return Oci2vmError(
        f"{name}: inflates to more than {MAX_MODULE >> 20} MiB, which no kernel module "
        "does: the package is corrupt or hostile"
    )


def _unxz(data: bytes) -> bytes:
    """Every xz stream of `data` (xz -d reads concatenated streams), capped."""
    out = bytearray()
    while data:
        decompressor = lzma.LZMADecompressor(lzma.FORMAT_XZ)
        out += decompressor.decompress(data, MAX_MODULE + 1 - len(out))
        if len(out) > MAX_MODULE:
            break  # refused by the caller
        if not decompressor.eof:
            raise EOFError("the xz stream is truncated")
        data = decompressor.unused_data.lstrip(b"\0")  # stream padding
    return bytes(out)


def _unzstd(name: str, data: bytes) -> bytes:
    """The zstd frame of `data` (the kernel writes one). A frame that states its size is
    decoded into a buffer of that size whatever max_output_size says, so a stated size
    over the limit is refused first; one that does not is decoded up to the limit."""
    import zstandard

    if zstandard.frame_content_size(data) > MAX_MODULE:
        raise _too_large(name)
    out: bytes = zstandard.ZstdDecompressor().decompress(data, max_output_size=MAX_MODULE + 1)
    return out


def _gunzip(data: bytes) -> bytes:
    decompressor = zlib.decompressobj(wbits=31)
    out = decompressor.decompress(data, MAX_MODULE + 1)
    if len(out) <= MAX_MODULE and not decompressor.eof:
        raise EOFError("the gzip stream is truncated")
    return out


def read_modinfo(data: bytes, what: str = "module") -> ModInfo:
    """The .modinfo fields, exports and needed symbols of an ELF module."""
    elf = _Elf(data, what)
    fields: dict[str, list[str]] = {}
    for entry in _strings(elf.section(".modinfo")):
        key, _, value = entry.partition("=")
        fields.setdefault(key, []).append(value)
    depends = ",".join(fields.get("depends", ()))
    return ModInfo(
        name=(fields.get("name") or [""])[0],
        depends=tuple(d for d in depends.split(",") if d),
        aliases=tuple(fields.get("alias", ())),
        softdeps=tuple(fields.get("softdep", ())),
        weakdeps=tuple(fields.get("weakdep", ())),
        firmware=tuple(fields.get("firmware", ())),
        vermagic=(fields.get("vermagic") or [""])[0],
        exports=elf.exports(),
        needs=elf.needs(),
    )


def _text(raw: bytes) -> str:
    return sys.intern(raw.decode("utf-8", "surrogateescape"))


def _strings(section: bytes | None) -> list[str]:
    """kmod_elf_get_strings: NUL-separated strings, runs of NULs read as one."""
    if section is None:
        return []
    return [_text(s) for s in section.split(b"\0") if s]


def _cstring(table: bytes, offset: int) -> bytes:
    """The NUL-terminated string at `offset` of a string table (cut at its end)."""
    end = table.find(b"\0", offset)
    return table[offset:end] if end >= 0 else table[offset:]


class _Elf:
    """The section table of an ELF file (32 or 64-bit, either byte order), checked as
    libkmod's kmod_elf_new checks it: ELF magic, class, data encoding, section header
    size, the table and the section-name table inside the file."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.what = what
        if len(data) <= EI_DATA or data[:4] != ELF_MAGIC:
            raise self.error("not an ELF file")
        cls, encoding = data[EI_CLASS], data[EI_DATA]
        if cls not in (ELFCLASS32, ELFCLASS64) or encoding not in (ELFDATA2LSB, ELFDATA2MSB):
            raise self.error(f"unknown ELF class {cls} or data encoding {encoding}")
        if len(data) <= (64 if cls == ELFCLASS64 else 52):  # sizeof(Elf64_Ehdr), Elf32
            raise self.error("truncated ELF header")
        self.is64 = cls == ELFCLASS64
        order = "<" if encoding == ELFDATA2LSB else ">"
        # Elf64_Ehdr/Elf32_Ehdr from e_machine on; e_type, e_entry etc. are skipped.
        header = order + ("18xH20xQ10xHHH" if self.is64 else "18xH12xI10xHHH")
        self.machine, shoff, shentsize, shnum, shstrndx = struct.unpack_from(header, data)
        # Elf_Shdr: sh_name, sh_offset, sh_size (the other fields are skipped)
        self._shdr = struct.Struct(order + ("I20xQQ24x" if self.is64 else "I12xII16x"))
        # Elf_Sym: st_name, st_info, st_shndx
        self._sym = struct.Struct(order + ("IBxH16x" if self.is64 else "I8xBxH"))
        self._crc = 8 if self.is64 else 4
        if shentsize != self._shdr.size or shoff + shnum * shentsize > len(data):
            raise self.error("section header table runs past the end or has a bad size")
        self._sections: list[tuple[int, int, int]] = [
            self._shdr.unpack_from(data, shoff + i * shentsize) for i in range(shnum)
        ]
        if not 0 < shstrndx < shnum or not self._inside(shstrndx):
            raise self.error("no valid section-name table")
        _, offset, size = self._sections[shstrndx]
        self._names = data[offset : offset + size]
        if not self._names.endswith(b"\0"):
            raise self.error("the section-name table does not end with NUL")

    def error(self, problem: str) -> Oci2vmError:
        return Oci2vmError(f"{self.what}: malformed kernel module: {problem}")

    def _inside(self, index: int) -> bool:
        _, offset, size = self._sections[index]
        return offset + size <= len(self.data)

    def section(self, name: str) -> bytes | None:
        """The first section of that name that lies inside the file (kmod_elf_get_section
        passes over the others), from index 1 on."""
        wanted = name.encode()
        for index in range(1, len(self._sections)):
            nameoff, offset, size = self._sections[index]
            if (
                nameoff < len(self._names)
                and self._inside(index)
                and _cstring(self._names, nameoff) == wanted
            ):
                return self.data[offset : offset + size]
        return None

    def _symbols(self) -> tuple[bytes, list[tuple[int, int, int]]] | None:
        """.strtab and the .symtab entries after the null one, as (name, info, shndx);
        None where kmod finds no usable table."""
        strtab, symtab = self.section(".strtab"), self.section(".symtab")
        if strtab is None or symtab is None or len(symtab) % self._sym.size:
            return None
        entries = list(self._sym.iter_unpack(symtab))[1:]
        return strtab, entries

    def exports(self) -> tuple[str, ...]:
        """kmod_elf_get_symbols: the `__crc_<sym>` symbols (modversions), else the
        strings of __ksymtab_strings."""
        table = self._symbols()
        if table is not None:
            strtab, entries = table
            if all(name < len(strtab) for name, _, _ in entries):
                crcs = {m.start() for m in re.finditer(rb"(?=__crc_)", strtab)}
                names = [name for name, _, _ in entries if name in crcs]
                if names:
                    skip = len(CRC_PREFIX)
                    return tuple(_text(_cstring(strtab, n + skip)) for n in names)
        return tuple(_strings(self.section("__ksymtab_strings")))

    def needs(self) -> tuple[str, ...]:
        """kmod_elf_get_dependency_symbols: undefined symbols in table order, then the
        __versions names none of them matched (module_layout and the like)."""
        table = self._symbols()
        if table is None:
            return ()
        strtab, entries = table
        sparc = self.machine in (EM_SPARC, EM_SPARCV9)
        names: list[bytes] = []
        for name, info, shndx in entries:
            if shndx != SHN_UNDEF or (sparc and (info & 0xF) == STT_REGISTER):
                continue
            if name >= len(strtab):
                return ()  # kmod gives up on the whole list
            if text := _cstring(strtab, name):
                names.append(text)
        versions = self.section("__versions")
        if versions is not None and len(versions) % MODVERSION_SIZE == 0:
            seen = set(names)
            for at in range(0, len(versions), MODVERSION_SIZE):
                entry = versions[at + self._crc : at + MODVERSION_SIZE]
                version = entry.split(b"\0", 1)[0]
                if version and version not in seen:
                    names.append(version)
                    seen.add(version)
        return tuple(_text(n) for n in names)
