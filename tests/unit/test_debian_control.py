"""Debian's control syntax as the archive chain reads it: paragraphs, relations, version
order (deb-version(7), cases from dpkg's own test suite), and the Release file's fields."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oci2vm.debian import packages
from oci2vm.debian.control import Relation, compare_versions, parse_fields, parse_relations
from oci2vm.debian.packages import parse_package
from oci2vm.debian.release import parse_release
from oci2vm.errors import Oci2vmError
from oci2vm.tree.model import BytesReader
from support.debarchives import release_text


@pytest.mark.parametrize(
    ("a", "b", "order"),
    [
        ("1.0", "1.0", 0), ("1.0", "1.1", -1), ("1.10", "1.9", 1), ("1:0.1", "2.0", 1),
        ("1.0~rc1", "1.0", -1), ("1.0~~", "1.0~", -1), ("1.0", "1.0+b1", -1),
        ("1.0-1", "1.0-1.1", -1), ("1.0a", "1.0+", -1), ("6.1.176-1", "6.1.38-1", 1),
        ("1:1.35.0-4+deb12u1+b1", "1:1.35.0-4+deb12u1", 1), ("0:1.0", "1.0", 0),
        ("a", "1", 1), ("2.4.7-1", "2.4.7-1~bpo1", 1), ("1.0-0", "1.0", 0),
    ],
)  # fmt: skip
def test_versions_sort_as_dpkg_sorts_them(a: str, b: str, order: int) -> None:
    assert compare_versions(a, b) == order
    assert compare_versions(b, a) == -order


def test_relations_parse_alternatives_versions_and_qualifiers() -> None:
    text = "kmod, linux-base (>= 4.3~), initramfs-tools (>= 0.120) | linux-initramfs-tool,\n" \
           " libc6:any (<< 3) [amd64] <!nocheck>, old (> 1)"  # fmt: skip
    assert parse_relations(text, "t") == [
        [Relation("kmod")],
        [Relation("linux-base", ">=", "4.3~")],
        [Relation("initramfs-tools", ">=", "0.120"), Relation("linux-initramfs-tool")],
        [Relation("libc6", "<<", "3")],
        [Relation("old", ">=", "1")],
    ]
    assert Relation("a", "=", "1.0-1").satisfied_by("1.0-1")
    assert not Relation("a", ">>", "1.0").satisfied_by("1.0")


def test_a_malformed_relation_is_one_line() -> None:
    with pytest.raises(Oci2vmError, match=r"^t: malformed relation 'Bad Name \(= 1\)'$"):
        parse_relations("ok, Bad Name (= 1)", "t")


def test_paragraph_fields_fold_continuation_lines() -> None:
    fields = parse_fields(b"Package: a\nDescription: short\n long\n .\n more\nX-A:b\n", "t")
    assert fields == {"Package": "a", "Description": "short\nlong\n.\nmore", "X-A": "b"}


@pytest.mark.parametrize(
    ("data", "message"),
    [(b" first\n", r"continuation first"), (b"no colon here\n", r"malformed control data line"),
     (b"A: \xff\n", r"not UTF-8")],
)  # fmt: skip
def test_malformed_control_data_is_one_line(data: bytes, message: str) -> None:
    with pytest.raises(Oci2vmError, match=message):
        parse_fields(data, "t")


def test_a_package_record_without_a_sha256_is_refused() -> None:
    fields = {"Package": "a", "Version": "1", "Filename": "pool/a.deb", "Size": "3"}
    with pytest.raises(Oci2vmError, match=r"^idx: a: lacks a valid SHA256 or Size: check --mirror"):
        parse_package(fields, "idx")


def test_release_fields_are_read() -> None:
    text = release_text("trixie", {"main/binary-arm64/Packages": b"x"}, by_hash=True,
                        valid_until=datetime(2026, 8, 1, tzinfo=UTC))  # fmt: skip
    release = parse_release(text, "r")
    assert (release.codename, release.suite, release.by_hash) == ("trixie", "stable", True)
    assert release.date == datetime(2026, 7, 1, 12, tzinfo=UTC)
    assert release.valid_until == datetime(2026, 8, 1, tzinfo=UTC)
    assert release.architectures == ("all", "amd64")
    entry = release.files["main/binary-arm64/Packages"]
    assert (entry.size, entry.sha256[:8]) == (1, "2d711642")


@pytest.mark.parametrize(
    ("text", "message"),
    [(b"Codename: x\nDate: Sat, 11 Jul 2026 10:16:37 UTC\n", r"lists no SHA256 sums"),
     (b"Codename: x\nSHA256:\n", r"has no Date field"),
     (b"Date: yesterday\nSHA256:\n", r"malformed Date 'yesterday'"),
     (b"Date: Sat, 11 Jul 2026 10:16:37 UTC\nSHA256:\n abc 1 x\n", r"malformed SHA256 line")],
)  # fmt: skip
def test_a_malformed_release_is_one_line(text: bytes, message: str) -> None:
    with pytest.raises(Oci2vmError, match=message):
        parse_release(text, "r")


RECORDS = [b"Package: a\nDepends: b", b"Package: b", b"Package: cc\n", b"X: y\n\n", b"\n",
           b"Package: a-b\nProvides: c"]  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(
    records=st.lists(st.sampled_from(RECORDS), max_size=12),
    chunk=st.integers(1, 40),
    needles=st.lists(st.sampled_from([b"a", b"b", b"c", b"Provides", b"zz"]), max_size=3),
)
def test_paragraphs_containing_are_those_of_the_full_split_that_hold_one(
    records: list[bytes], chunk: int, needles: list[bytes]
) -> None:
    """The filter of a pass over an index only leaves out paragraphs: the ones it gives
    are those the unfiltered split gives that hold a needle, whatever the chunking."""
    text = b"\n\n".join(records)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(packages, "SCAN_CHUNK", chunk)
        every = list(packages.paragraphs(BytesReader(text), "index"))
        some = list(packages.paragraphs(BytesReader(text), "index", tuple(needles)))
    assert every == [p for p in text.split(b"\n\n") if p.strip()]
    assert some == [p for p in every if not needles or any(n in p for n in needles)]
