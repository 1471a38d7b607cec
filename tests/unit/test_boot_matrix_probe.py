"""The boot matrix's console probe without QEMU (support.bootmatrix): the typed line's
answers are read back from console text however the console mangled it, the typed line
itself never counts as an answer, and the login script's steps are in order."""

from __future__ import annotations

from support import bootmatrix
from support.bootmatrix import login_script, parse_answers, probe_line, probe_script

ANSWERS = (
    "==BEGIN-42==\n"
    "ip-42=10.0.2.15\n"
    "dns-42=10.0.2.3\n"
    "page-42=oci2vm-page-0123\n"
    "machine-id-42=0123456789abcdef0123456789abcdef\n"
    "write-42=written-by-root\n"
    "==END-42==\n"
)
EXPECTED = {
    "ip": "10.0.2.15",
    "dns": "10.0.2.3",
    "page": "oci2vm-page-0123",
    "machine-id": "0123456789abcdef0123456789abcdef",
    "write": "written-by-root",
}


def test_answers_are_read_between_the_markers() -> None:
    assert parse_answers("login: tester\nPassword:\n$ " + ANSWERS + "$ ") == EXPECTED


def test_the_echoed_command_line_is_not_an_answer() -> None:
    """The console echoes the typed line: its markers are unexpanded ($((6*7)))."""
    line = probe_line(8080)
    assert parse_answers(f"$ {line}\n") == {}
    assert parse_answers(f"$ {line}\n{ANSWERS}") == EXPECTED
    assert "42" not in line.replace("$((6*7))", "")  # only the shell makes the marker


def test_crlf_and_interleaved_kernel_messages_are_ignored() -> None:
    console = (
        "==BEGIN-42==\r\n"
        "[   12.345678] virtio_net virtio0 enp0s3: renamed from eth0\r\n"
        "ip-42=10.0.2.15\r\n"
        "dns-42=10.0.2.3\r\n"
        "[   13.000001] random: crng init done page-42=oci2vm-page-0123\r\n"
        "machine-id-42=0123456789abcdef0123456789abcdef\r\n"
        "write-42=written-by-root\r\n"
        "==END-42==\r\n"
    )
    assert parse_answers(console) == EXPECTED


def test_a_missing_or_empty_answer_is_reported_as_such() -> None:
    console = "==BEGIN-42==\nip-42=\npage-42=x\n==END-42==\n"
    assert parse_answers(console) == {"ip": "", "page": "x"}
    assert parse_answers("==BEGIN-42==\nip-42=10.0.2.15\n") == {}  # no end: no answers


def test_the_last_block_wins() -> None:
    first = ANSWERS.replace("10.0.2.15", "10.0.2.16")
    assert parse_answers(first + ANSWERS)["ip"] == "10.0.2.15"


def test_probe_line_fetches_from_the_user_network_gateway() -> None:
    line = probe_line(18080)
    assert "/dev/tcp/10.0.2.2/18080" in line
    assert f"GET {bootmatrix.PAGE_PATH} HTTP/1.0" in line
    wget = probe_line(18080, bootmatrix.BUSYBOX_WGET)
    assert f"wget -q -O - http://10.0.2.2:18080{bootmatrix.PAGE_PATH}" in wget
    assert "$((" not in line.replace("$((6*7))", "").replace("$((n+1))", "")  # no $(( subshell


def test_login_script_logs_in_then_answers_su() -> None:
    script = login_script("tester", "pw", "LINE", su_password="rootpw")
    assert script == [
        ("", "tester"),
        ("Password:", "pw"),
        (r"\$ ", "LINE"),
        ("Password:", "rootpw"),
        ("==END-42==", None),
    ]
    assert login_script("tester", "pw", "LINE") == [*script[:3], script[4]]


def test_without_su_the_user_logs_out_and_root_writes() -> None:
    line = probe_line(8080, bootmatrix.BUSYBOX_WGET, su=False)
    assert line.endswith("; exit")
    assert "su root" not in line
    assert probe_script("tester", "pw", "rootpw", line, su=False) == [
        ("", "tester"),
        ("Password:", "pw"),
        (r"\$ ", line),
        ("login:", "root"),
        ("Password:", "rootpw"),
        (r"# ", bootmatrix.ROOT_WRITE_LINE),
        ("==END-42==", None),
    ]
    # the answers span both sessions: the user's, then root's after the second login
    console = ANSWERS.replace("write-42=written-by-root\n==END-42==\n", "")
    console += "\nlogin: root\nPassword:\n# " + bootmatrix.ROOT_WRITE_LINE + "\n"
    console += "write-42=written-by-root\n==END-42==\n"
    assert parse_answers(console) == EXPECTED


def test_with_su_root_password_goes_to_su() -> None:
    line = probe_line(8080)
    assert f"su root -c 'echo written-by-root > {bootmatrix.WRITTEN_FILE}'" in line
    assert probe_script("tester", "pw", "rootpw", line) == login_script(
        "tester", "pw", line, su_password="rootpw"
    )
