"""Auth files and credential helpers as registry tests write them."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def write_json(path: Path, doc: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def make_helper(bin_dir: Path, name: str, script: str) -> Path:
    """A docker-credential-NAME program that logs its stdin to NAME.stdin."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    program = bin_dir / f"docker-credential-{name}"
    program.write_text(
        f'#!/bin/sh\n[ "$1" = get ] || exit 2\nserver=$(cat)\n'
        f'printf %s "$server" >> {bin_dir}/{name}.stdin\n{script}\n'
    )
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    return program
