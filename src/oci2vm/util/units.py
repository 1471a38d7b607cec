"""Units and rounding, declared once: byte sizes, the 512-byte sector, ceiling division."""

from __future__ import annotations

import re
from fractions import Fraction

from oci2vm.errors import Oci2vmError

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30
TIB = 1 << 40
SECTOR = 512  # the logical sector of every partition table and boot record written here


def ceil_div(value: int, divisor: int) -> int:
    """value / divisor rounded up (for non-negative value, positive divisor)."""
    return -(-value // divisor)


def align_up(value: int, alignment: int) -> int:
    """The least multiple of `alignment` that is >= value."""
    return ceil_div(value, alignment) * alignment


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtKMGT]?)(i?[bB]?)\s*$")
_SCALE = {"": 1, "K": KIB, "M": MIB, "G": GIB, "T": TIB}


def parse_size(text: str) -> int:
    """10G, 512M, 1.5GiB, 1073741824 -> bytes (binary units, as qemu-img and truncate)."""
    m = _SIZE_RE.match(text)
    if not m:
        raise Oci2vmError(f"malformed size {text!r}: use a number with K, M, G or T")
    # Exact arithmetic: a float would round large sizes (1000000000000T) to other numbers.
    return int(Fraction(m[1]) * _SCALE[m[2].upper()])
