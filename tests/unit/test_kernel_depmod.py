"""oci2vm.kernel.depmod: dependencies from symbols, depmod's numbering and order, the
closure of wanted modules, and every file depmod writes, worked out by hand from
tools/depmod.c for a handful of modules (the real kernel's are compared with depmod's
own in tests/integration/test_depmod_differential.py)."""

from __future__ import annotations

import pytest

from oci2vm.errors import Oci2vmError
from oci2vm.kernel.depmod import ModuleDb, alias_normalize
from oci2vm.kernel.modinfo import ModInfo, read_modinfo
from support.elfmodules import build_module
from support.kmodindexes import read_index

ORDER = b"kernel/drivers/top.ko\nkernel/lib/base.ko\nkernel/lib/mid-a.ko\nkernel/lib/mid_b.ko\n"
TOP_ALIASES = (
    "pci:v00001AF4d*sv*sd*bc*sc*i*",
    "virtio-x",
    "devname:topdev",
    "char-major-10-200",
    "of:N*T*Cfoo-[a-b]",
    "bad]alias",
)
BUILTIN = b"kernel/fs/ext4/ext4.ko\nkernel/crypto/crc32c-generic.ko\n# not a module\n"
BUILTIN_MODINFO = (
    b"ext4.alias=fs-ext4\0ext4.license=GPL\0"
    b"crc32c_generic.alias=crypto-crc32c\0crc32c_generic.alias=crc32c\0"
)


def sample(top_needs: tuple[str, ...] = ("b_fn", "a_fn", "base_fn")) -> ModuleDb:
    """top needs mid_a, mid_b and base; mid_a and mid_b need base; loner is not in
    modules.order. The array is top 0, base 1, mid_a 2, mid_b 3, loner 4."""
    db = ModuleDb()
    db.add("kernel/lib/base.ko", ModInfo(exports=("base_fn",)))
    db.add("kernel/extra/loner.ko", ModInfo())
    db.add(
        "kernel/lib/mid-a.ko",
        ModInfo(exports=("a_fn",), needs=("base_fn", "printk"), softdeps=("pre: base",)),
    )
    db.add("kernel/lib/mid_b.ko.xz", ModInfo(exports=("b_fn",), needs=("base_fn",)))
    db.add(
        "kernel/drivers/top.ko",
        ModInfo(needs=top_needs, aliases=TOP_ALIASES, weakdeps=("mid_b",)),
    )
    db.set_order(ORDER)
    db.set_builtin(BUILTIN, BUILTIN_MODINFO)
    return db


def test_modules_dep_lists_every_dependency_in_depmods_numbering() -> None:
    """Numbering (a stack: loner 0, top 1, then top's dependencies pushed in the order
    its symbols name them, so mid_a 2, mid_b 3, base 4); modules.order's order, the
    module it does not list last."""
    assert sample().indices("6.1")["modules.dep"] == (
        b"kernel/drivers/top.ko: kernel/lib/mid-a.ko kernel/lib/mid_b.ko.xz kernel/lib/base.ko\n"
        b"kernel/lib/base.ko:\n"
        b"kernel/lib/mid-a.ko: kernel/lib/base.ko\n"
        b"kernel/lib/mid_b.ko.xz: kernel/lib/base.ko\n"
        b"kernel/extra/loner.ko:\n"
    )


def test_the_order_of_needed_symbols_decides_ties_as_in_depmod() -> None:
    db = sample(top_needs=("a_fn", "b_fn", "base_fn"))  # mid_a pushed first, taken last
    assert db.indices("6.1")["modules.dep"].splitlines()[0] == (
        b"kernel/drivers/top.ko: kernel/lib/mid_b.ko.xz kernel/lib/mid-a.ko kernel/lib/base.ko"
    )
    assert db.closure(["top"])[1:3] == ["kernel/lib/mid-a.ko", "kernel/lib/mid_b.ko.xz"]


def test_the_closure_puts_what_a_module_needs_before_it() -> None:
    db = sample()
    assert db.closure(["top"]) == [
        "kernel/lib/base.ko",
        "kernel/lib/mid_b.ko.xz",
        "kernel/lib/mid-a.ko",
        "kernel/drivers/top.ko",
    ]
    assert db.closure(["mid-a", "loner", "ext4", "crc32c_generic"]) == [
        "kernel/lib/base.ko",
        "kernel/lib/mid-a.ko",
        "kernel/extra/loner.ko",
    ]
    assert db.closure(["ext4"]) == []  # built in: nothing to load


def test_an_unknown_module_is_named() -> None:
    db = sample()
    assert db.missing(["virtio-blk", "ext4", "top", "virtio_blk", "nope"]) == [
        "virtio_blk",
        "nope",
    ]
    with pytest.raises(Oci2vmError, match="kernel modules virtio_blk, nope: neither built in"):
        db.closure(["top", "virtio-blk", "nope"])
    assert "mid-a" in db and "mid_a" in db and "ext4" not in db and len(db) == 5
    assert db.builtin() == {"ext4", "crc32c_generic"}


def test_the_text_files() -> None:
    files = sample().indices("6.1")
    assert files["modules.alias"] == (
        b"# Aliases extracted from modules themselves.\n"
        + b"".join(b"alias %s top\n" % a.encode() for a in TOP_ALIASES)
    )
    assert files["modules.softdep"] == (
        b"# Soft dependencies extracted from modules themselves.\nsoftdep mid_a pre: base\n"
    )
    assert files["modules.weakdep"] == (
        b"# Weak dependencies extracted from modules themselves.\nweakdep top mid_b\n"
    )
    assert files["modules.devname"] == (
        b"# Device nodes to trigger on-demand module loading.\ntop topdev c10:200\n"
    )
    symbols = files["modules.symbols"].splitlines()
    assert symbols[0] == b"# Aliases for symbols, used by symbol_request()."
    assert sorted(symbols[1:]) == [
        b"alias symbol:a_fn mid_a",
        b"alias symbol:b_fn mid_b",
        b"alias symbol:base_fn base",
    ]
    assert sorted(files) == sorted(
        f"modules.{n}"
        for n in [
            "alias",
            "alias.bin",
            "builtin.alias.bin",
            "builtin.bin",
            "dep",
            "dep.bin",
            "devname",
            "softdep",
            "symbols",
            "symbols.bin",
            "weakdep",
        ]
    )
    assert "modules.weakdep" not in sample().indices("6.1", weakdep=False)


def test_the_binary_indexes() -> None:
    files = sample().indices("6.1")
    deps = read_index(files["modules.dep.bin"])
    assert deps["mid_a"] == [(2, "kernel/lib/mid-a.ko: kernel/lib/base.ko")]
    assert deps["loner"] == [(4, "kernel/extra/loner.ko:")]
    assert sorted(deps) == ["base", "loner", "mid_a", "mid_b", "top"]
    assert read_index(files["modules.alias.bin"]) == {
        "pci:v00001AF4d*sv*sd*bc*sc*i*": [(0, "top")],
        "virtio_x": [(0, "top")],
        "devname:topdev": [(0, "top")],
        "char_major_10_200": [(0, "top")],
        "of:N*T*Cfoo_[a-b]": [(0, "top")],  # no "bad]alias": depmod leaves it out
    }
    assert read_index(files["modules.symbols.bin"]) == {
        "symbol:base_fn": [(1, "base")],
        "symbol:a_fn": [(2, "mid_a")],
        "symbol:b_fn": [(3, "mid_b")],
    }
    assert read_index(files["modules.builtin.bin"]) == {
        "ext4": [(0, "")],
        "crc32c_generic": [(0, "")],
    }
    assert read_index(files["modules.builtin.alias.bin"]) == {
        "fs_ext4": [(0, "ext4")],
        "crypto_crc32c": [(0, "crc32c_generic")],
        "crc32c": [(0, "crc32c_generic")],
    }


def test_builtin_modinfo_is_read_as_depmods_stream_parser_reads_it() -> None:
    db = ModuleDb()
    db.set_builtin(
        b"",
        b"a.alias=same\0b.alias=same\0"  # equal priorities: the later first
        b"x.noequals\0y.alias=swallowed\0"  # an entry without '=' takes the next along
        b"noperiod\0z.alias=kept\0w.alias=\0v.alias=unterminated",
    )
    assert read_index(db.indices("v")["modules.builtin.alias.bin"]) == {
        "same": [(0, "b"), (0, "a")],
        "kept": [(0, "z")],
    }


def test_without_builtin_files_their_indexes_are_empty_as_depmod_leaves_them() -> None:
    db = ModuleDb()
    db.add("a.ko", ModInfo())
    files = db.indices("v")
    assert files["modules.builtin.bin"] == b""
    assert files["modules.builtin.alias.bin"] == b""
    assert files["modules.dep"] == b"a.ko:\n"
    assert files["modules.devname"] == b""


def test_the_later_exporter_of_a_symbol_wins() -> None:
    db = sample()
    db.add("kernel/extra/again.ko", ModInfo(exports=("base_fn",)))
    lines = db.indices("v")["modules.dep"].splitlines()
    assert b"kernel/lib/mid-a.ko: kernel/extra/again.ko" in lines


def test_without_modules_order_the_order_does_not_depend_on_adding() -> None:
    names = [f"kernel/m{n}.ko" for n in range(40)]
    forward, backward = ModuleDb(), ModuleDb()
    for name in names:
        forward.add(name, ModInfo(aliases=(name,)))
    for name in reversed(names):
        backward.add(name, ModInfo(aliases=(name,)))
    assert forward.indices("v") == backward.indices("v")
    broken = ModuleDb()  # a modules.order without its last newline counts as none
    for name in names:
        broken.add(name, ModInfo(aliases=(name,)))
    broken.set_order(b"\n".join(n.encode() for n in names))
    assert broken.indices("v") == forward.indices("v")
    broken.set_order(b"\n".join(n.encode() for n in names) + b"\n")
    assert broken.indices("v")["modules.dep"] == b"".join(b"%s:\n" % n.encode() for n in names)


def test_a_second_file_of_one_name_is_passed_over() -> None:
    db = ModuleDb()
    db.add("kernel/a/dup.ko", ModInfo(aliases=("first",)))
    db.add("updates/dup.ko.xz", ModInfo(aliases=("second",)))
    assert db.closure(["dup"]) == ["kernel/a/dup.ko"]


def test_a_dependency_cycle_is_refused() -> None:
    db = ModuleDb()
    db.add("x.ko", ModInfo(exports=("x",), needs=("y",)))
    db.add("y.ko", ModInfo(exports=("y",), needs=("x",)))
    db.add("z.ko", ModInfo(needs=("x",)))
    with pytest.raises(Oci2vmError, match=r"cycle .*: x, y$"):
        db.indices("v")


def test_modules_read_from_elf_files_resolve_their_dependencies() -> None:
    db = ModuleDb()
    db.add("a.ko", read_modinfo(build_module(["name=a"], exports=["sym_a"])))
    db.add("b.ko", read_modinfo(build_module(["name=b"], undefined=["sym_a", "printk"])))
    db.add("c.ko", read_modinfo(build_module(["name=c"], undefined=[".sym_a"])))  # ppc64
    first, *rest = db.closure(["b", "c"])
    assert (first, sorted(rest)) == ("a.ko", ["b.ko", "c.ko"])


@pytest.mark.parametrize(
    ("alias", "normal"),
    [
        ("usb:v-[0-9]-x", "usb:v_[0-9]_x"),
        ("a-b", "a_b"),
        ("x]", None),
        ("x[0-9", None),
        ("x" * 5000, "x" * 4095),
    ],
)
def test_alias_normalize(alias: str, normal: str | None) -> None:
    assert alias_normalize(alias) == normal
