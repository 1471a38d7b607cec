"""The command line's parts alone: option parsing (--root-password-file) and the reporter
that writes notes, warnings and results. (tests/integration/test_cli_inspect.py runs the
CLI end to end.)"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from oci2vm.cli import main, parse
from oci2vm.errors import Oci2vmError


@dataclass(frozen=True)
class Result:
    """A report as commands make them (reports.py): one JSON form, one human form."""

    data: dict[str, Any]
    text: str

    def to_json(self) -> dict[str, Any]:
        return self.data

    def human(self) -> str:
        return self.text


def test_reporter_writes_text_as_it_is(capsys: pytest.CaptureFixture[str]) -> None:
    """Notes and warnings on stderr, the result on stdout, nothing reinterpreted (no
    markup, no :emoji: codes); -q keeps warnings only."""
    from oci2vm.report import Reporter

    reporter = Reporter()
    reporter.note("layer [b]1[/b] :smile:")
    reporter.warn("nobody can log in")
    reporter.result(Result({"a": 1}, "Wrote disk.img :x:\n"))
    out, err = capsys.readouterr()
    assert out == "Wrote disk.img :x:\n"
    assert err == "layer [b]1[/b] :smile:\nwarning: nobody can log in\n"
    quiet = Reporter(quiet=True, json_output=True)
    quiet.note("hidden")
    quiet.warn("shown")
    quiet.result(Result({"a": 1}, "not shown"))
    out, err = capsys.readouterr()
    assert (json.loads(out), err) == ({"a": 1}, "warning: shown\n")


def test_a_warning_is_not_repeated_in_the_result_on_the_same_terminal(tmp_path: Path) -> None:
    """The result lists the notes for a stdout of its own (a file, a pipe); where stdout
    and stderr are one terminal, the lines already shown as warnings are left out."""
    import os
    import pty
    import sys

    from oci2vm import report

    text = "Wrote disk.img (raw)\n  nobody can log in\n  kept\n  in 1.0 s"
    for same in (True, False):
        primary, secondary = pty.openpty()
        out_file = tmp_path / "out.txt"
        saved = sys.stdout, sys.stderr
        with os.fdopen(secondary, "w", closefd=True) as tty, out_file.open("w") as plain:
            sys.stdout, sys.stderr = (tty if same else plain), tty
            try:
                reporter = report.Reporter()
                reporter.warn("nobody can log in")
                reporter.result(Result({}, text))
            finally:
                sys.stdout, sys.stderr = saved
        seen = _read_all(primary).decode().replace("\r\n", "\n")
        if same:
            expected = "warning: nobody can log in\nWrote disk.img (raw)\n  kept\n  in 1.0 s\n"
            assert seen == expected
        else:
            assert (seen, out_file.read_text()) == ("warning: nobody can log in\n", text + "\n")


def test_root_password_file_keeps_the_password_off_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import io

    from oci2vm.cli import config_from, parser

    secret = tmp_path / "pw"
    secret.write_text("s3cret word\nsecond line\n")
    args = ["build", "oci:x", "-o", "d.img", "--root-password-file"]
    assert config_from(parser().parse_args([*args, str(secret)])).root_password == "s3cret word"
    monkeypatch.setattr("sys.stdin", io.StringIO("from stdin\r\n"))
    assert config_from(parser().parse_args([*args, "-"])).root_password == "from stdin"
    with pytest.raises(SystemExit) as exit_info:  # one or the other
        parser().parse_args([*args, str(secret), "--root-password", "x"])
    assert exit_info.value.code == 2
    capsys.readouterr()
    (tmp_path / "empty").write_text("\n")
    missing = "cannot read the root password from {}: No such file or directory"
    for bad, message in ((tmp_path / "missing", missing), (tmp_path / "empty", "{}: the root")):
        assert main([*args, str(bad)]) == 1
        _out, err = capsys.readouterr()
        assert message.format(bad) in err and err.count("\n") == 1


def test_a_root_password_from_a_terminal_is_asked_without_echo(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import io

    from oci2vm.cli import read_password

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    asked: list[str] = []
    monkeypatch.setattr("sys.stdin", Terminal("echoed if read\n"))
    monkeypatch.setattr("getpass.getpass", lambda prompt: asked.append(prompt) or "typed")
    assert read_password(Path("-")) == "typed"
    assert asked == ["root password for the image: "]


def test_password_and_key_files_are_read_with_a_size_cap(tmp_path: Path) -> None:
    """/dev/zero given by mistake is a one-line error, not memory exhausted."""
    from oci2vm.cli import read_password
    from oci2vm.errors import Oci2vmError
    from oci2vm.prepare.ssh import read_ssh_keys

    with pytest.raises(Oci2vmError, match="longer than 4096 characters"):
        read_password(Path("/dev/zero"))
    with pytest.raises(Oci2vmError, match=r"--ssh-key /dev/zero: larger than 256 KiB"):
        read_ssh_keys((Path("/dev/zero"),))
    long_line = tmp_path / "pw"
    long_line.write_text("x" * 4097 + "\n")
    with pytest.raises(Oci2vmError, match="longer than 4096"):
        read_password(long_line)
    long_line.write_text("x" * 4096 + "\n")
    assert read_password(long_line) == "x" * 4096


def test_network_timeout_and_insecure_hosts_reach_the_config(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from oci2vm.cli import config_from, parser

    args = ["inspect", "r.example/app:1"]
    default = config_from(parser().parse_args(args))
    assert (default.network_timeout, default.insecure_hosts) == (60.0, ())
    options = ["--network-timeout", "5", "--insecure-host", "a.example", "--insecure-host", "b"]
    config = config_from(parser().parse_args([*args, *options]))
    assert (config.network_timeout, config.insecure_hosts) == (5.0, ("a.example", "b"))
    for bad in ("0", "-1", "nan", "inf", "x"):
        with pytest.raises(SystemExit):
            parser().parse_args([*args, "--network-timeout", bad])
        assert "--network-timeout: expected a number of seconds above 0" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["check", "d.img", "--expect", "("], "--expect: not a regular expression: '('"),
        (["check", "d.img", "--timeout", "nan"], "--timeout: expected a number of seconds"),
        (["check", "d.img", "--timeout", "-5"], "--timeout: expected a number of seconds"),
        (["check", "d.img", "--cpus", "0"], "--cpus: expected a whole number above 0"),
        (["run", "--stop-timeout", "-7", "d.img"], "--stop-timeout: expected whole seconds"),
    ],
)
def test_values_the_vm_cannot_take_are_usage_errors(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    """Found before a build or a boot (a bad --expect was a traceback after the build)."""
    from oci2vm.cli import parser

    with pytest.raises(SystemExit):
        parser().parse_args(argv)
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["build", "oci:/nonexistent/layout", "-o", "{tmp}/x.ext4", "--json"],  # a build error
        [
            "build",
            "tar:/dev/null",
            "-o",
            "{tmp}/x.ext4",
            "--json",
            "--root-password-file",
            "{tmp}/no",
        ],
        ["inspect", "oci:/nonexistent/layout", "--json"],
    ],
)
def test_with_json_a_failure_is_a_json_document_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    status = main([a.format(tmp=tmp_path) for a in argv])
    out, err = capsys.readouterr()
    assert status == 1 and err.startswith("oci2vm: error: ") and err.count("\n") == 1
    assert json.loads(out) == {"error": err.removeprefix("oci2vm: error: ")[:-1], "exit_status": 1}
    assert not (tmp_path / "x.ext4").exists()


@pytest.mark.parametrize(
    ("argv", "status"),
    [
        (["build", "img", "-o", "x.img", "--size", "lots", "--json"], 2),
        (["run", "--json", "--frob", "img"], 125),  # (run's usage errors are docker run's)
    ],
)
def test_with_json_a_usage_error_is_a_json_document_too(
    capsys: pytest.CaptureFixture[str], argv: list[str], status: int
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    out, err = capsys.readouterr()
    assert exit_.value.code == status
    said = json.loads(out)
    assert said["exit_status"] == status and said["error"] in err


def test_an_empty_hostname_is_refused_not_taken_for_the_default(tmp_path: Path) -> None:
    assert main(["build", "tar:/dev/null", "-o", str(tmp_path / "x.img"), "--hostname", ""]) == 1
    assert not (tmp_path / "x.img").exists()


def test_urllib3s_own_warnings_stay_quiet_unless_verbose(tmp_path: Path) -> None:
    """A retry urllib3 makes on its own ("Retrying (_Retry(total=2...") is no warning for
    the user: an error stays one line, and a build that succeeded says nothing on -q."""
    import logging

    missing = f"oci:{tmp_path / 'nothing'}:latest"
    logger = logging.getLogger("urllib3")
    saved = logger.level
    try:
        main(["inspect", missing])
        assert not logger.isEnabledFor(logging.WARNING)
        main(["inspect", "--verbose", missing])
        assert logger.isEnabledFor(logging.WARNING)
    finally:
        logger.setLevel(saved)


def _read_all(primary: int) -> bytes:
    """What a pty's other side wrote before it was closed (it comes in pieces; the read
    after the last one fails with EIO on Linux)."""
    import os

    chunks = []
    try:
        while chunk := os.read(primary, 4096):
            chunks.append(chunk)
    except OSError:
        pass
    finally:
        os.close(primary)
    return b"".join(chunks)


def test_with_quiet_a_build_says_nothing_of_what_went_as_it_should(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`build -q` of an image without a kernel: the kernel it injected is a note (as
    `run -q` keeps it), what needs attention a warning still."""
    from oci2vm.pipeline import tell_notes
    from oci2vm.report import Info, Reporter

    notes = (Info("injected linux-image-6.1.0-1-amd64 6.1.4-1"), "nobody can log in")
    tell_notes(Reporter(quiet=True), notes)
    assert capsys.readouterr().err == "warning: nobody can log in\n"
    tell_notes(Reporter(quiet=False), notes)
    assert capsys.readouterr().err == (
        "injected linux-image-6.1.0-1-amd64 6.1.4-1\nwarning: nobody can log in\n"
    )


def test_an_output_to_stdout_or_a_directory_is_refused_before_any_work(tmp_path: Path) -> None:
    from oci2vm.cli import config_from, parser

    for out, message in (
        ("-", "-o -: a disk is written out of order"),
        (str(tmp_path), "is a directory"),
    ):
        config = config_from(parser().parse_args(["build", "tar:/x", "-o", out]))
        with pytest.raises(Oci2vmError, match=message):
            config.output_format()


@pytest.mark.parametrize(
    ("argv", "first"),
    [
        (
            ["build", "--formt", "raw", "x", "-o", "y.img"],
            "oci2vm build: error: unrecognized arguments: --formt x (did you mean --format?)",
        ),
        (["biuld", "x"], "(did you mean build?)"),
        (["build", "oci:x"], "oci2vm build: error: the following arguments are required: -o"),
        (
            ["run", "--accel", "kvmm", "x"],
            "'kvmm' is not one of auto, kvm, tcg (did you mean kvm?)",
        ),
        (
            ["build", "--tls-verify", "docker://h/i", "-o", "x.img"],
            "(a bare --tls-verify takes the next word: write --tls-verify=true)",
        ),
        # docker run's boolean --init takes the image as its value: named as such
        (
            ["run", "--init", "oci:img", "sh"],
            "'oci:img' is not one of auto, system, app; docker run's --init (tini as PID 1) has no",
        ),
    ],
)
def test_a_usage_error_is_one_line_then_where_the_help_is(
    capsys: pytest.CaptureFixture[str], argv: list[str], first: str
) -> None:
    """As docker tells one: what is wrong (and what was likely meant), then the help's
    command, not the usage of forty options; told by the command's own parser."""
    with pytest.raises(SystemExit) as usage:
        main(argv)
    assert usage.value.code == (125 if argv[0] == "run" else 2)  # (docker run's 125)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and first in lines[0], lines
    assert lines[1] == f"See '{lines[0].partition(': error:')[0]} --help'."


def test_run_takes_h_for_the_hostname_as_docker_run_does() -> None:
    """`docker run -h NAME` names the host; run printed its help and exited 0, so a
    script ported from docker went on as if it had run."""
    args = parse(["run", "-h", "web1", "oci:img", "hostname"])
    assert (args.hostname, args.source) == ("web1", "oci:img")


@pytest.mark.parametrize("command", ["inspect", "build", "run", "check"])
def test_help_lists_options_under_headings_by_kind(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """40-odd options in one flat list were hard to read: each kind has its heading, and
    the generic "options:" keeps only -h and the command's own (build's -o, check's)."""
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    headings = [line for line in text.splitlines() if line.endswith(":") and line[:1] != " "]
    assert "the image and its registry:" in headings and "what is printed:" in headings
    generic = text.split("\noptions:\n")[1].split("\n\n")[0]
    flags = re.findall(r"^  (-[-\w]+)", generic, re.MULTILINE)
    own = {"build": ["-o"], "check": ["--expect", "--timeout"]}.get(command, [])
    help_flag = "--help" if command == "run" else "-h"  # (run's -h is docker's --hostname)
    assert flags == [help_flag, *own], generic
    if command == "run":  # docker run's options first, where its users look
        assert headings.index("an app image's workload (as docker run's):") == 2
