"""util/crc.py: CRC-32C from the crc32c package's extension, loaded without its __init__."""

from __future__ import annotations

import subprocess
import sys

import crc32c as package

from oci2vm.util import crc


def test_check_value_and_continuation() -> None:
    assert crc.crc32c(b"123456789", 0) == 0xE3069283  # CRC-32C's published check value
    assert crc.crc32c(b"6789", crc.crc32c(b"12345", 0)) == 0xE3069283
    data = bytes(range(256)) * 40
    assert crc.crc32c(memoryview(data), 7) == package.crc32c(data, 7)


def test_extension_loaded_without_the_package() -> None:
    assert crc._extension().__name__ == "crc32c._crc32c"
    script = "import sys; import oci2vm.util.crc; print('importlib.metadata' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
