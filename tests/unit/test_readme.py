"""README's set-up commands are the ones CI runs, word for word."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```sh\n(.*?)```", section, re.S)]


def test_ci_runs_the_readme_setup_commands_verbatim() -> None:
    commands = readme_commands()
    assert len(commands) == 2
    ci_lines = (ROOT / ".ci/run").read_text().splitlines()
    for command in commands:
        assert command in ci_lines, f"{command!r} is not a line of .ci/run"
