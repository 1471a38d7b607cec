"""Kept for tests/test_osprep.py, which its owner has yet to move to `support.layouts`;
delete this file once nothing imports `layouts`. The helpers live in support/layouts.py."""

from support.layouts import Member, directory, file, hardlink, symlink, write_layout

__all__ = ["Member", "directory", "file", "hardlink", "symlink", "write_layout"]
