"""The command line end to end on layouts built in the test: inspect's report, one-line
errors with a non-zero exit for every kind of bad input, the console script, and progress
on a terminal."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from oci2vm.cli import main
from support.layouts import directory, file, hardlink, layer_tar, symlink, write_layout


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_inspect_json_reports_image_and_tree(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    built = write_layout(
        tmp_path / "img",
        [
            [
                directory("etc"),
                file("etc/os-release", b'PRETTY_NAME="Test OS 1"\nID=testos\nVERSION_ID=1\n'),
                directory("boot"),
                file("boot/vmlinuz-6.1.0-9-amd64", b"k1"),
                file("boot/initrd.img-6.1.0-9-amd64", b"i1"),
                file("boot/vmlinuz-6.1.0-10-amd64", b"k2"),
                directory("sbin"),
                directory("lib"),
                directory("lib/systemd"),
                file("lib/systemd/systemd", b"elf", mode=0o755),
                symlink("sbin/init", "/lib/systemd/systemd"),
            ],
            [file("etc/hosts", b"127.0.0.1 localhost\n"), hardlink("etc/hosts2", "etc/hosts")],
        ],
        config={"Entrypoint": ["/bin/sh"], "Cmd": ["-c", "true"], "Env": ["A=b"], "User": "1000"},
    )
    code, out, err = run_cli(capsys, "inspect", f"oci:{tmp_path / 'img'}:latest", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["manifest_digest"] == built.manifest_digest
    assert report["image_id"] == built.config_digest
    assert [layer["diff_id"] for layer in report["layers"]] == built.diff_ids
    assert [layer["digest"] for layer in report["layers"]] == built.layer_digests
    assert report["platform"] == "linux/amd64"
    assert report["config"]["Entrypoint"] == ["/bin/sh"]
    assert report["config"]["Cmd"] == ["-c", "true"]
    assert report["config"]["Env"] == ["A=b"]
    assert report["config"]["User"] == "1000"
    assert report["os"] == {"pretty_name": "Test OS 1", "id": "testos", "version_id": "1"}
    assert [k["version"] for k in report["kernels"]] == ["6.1.0-10-amd64", "6.1.0-9-amd64"]
    assert report["kernels"][1]["initrd"] == "/boot/initrd.img-6.1.0-9-amd64"
    assert report["kernels"][0]["initrd"] is None
    assert report["init"] == {"system": "systemd", "path": "/lib/systemd/systemd"}
    assert report["entries"]["hardlink_groups"] == 1
    assert report["entries"]["total"] == 13
    # every name is counted once: an inode by its kind, its other names as hard links
    counted = ("file", "dir", "symlink", "char", "block", "fifo", "hardlinks")
    assert sum(report["entries"][k] for k in counted) == 13


def test_inspect_human_output_names_the_essentials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = {"Cmd": ["httpd", "-p", "80"], "Env": ["A=\x1b[2Jb"], "WorkingDir": "/srv"}
    write_layout(tmp_path / "img", [[file("a", b"x")]], config=config)
    code, out, _ = run_cli(capsys, "inspect", f"oci:{tmp_path / 'img'}")
    assert code == 0
    assert "Image ID:   sha256:" in out
    assert "Init:       none" in out
    assert "Kernels:    none" in out
    # The config as docker image inspect shows it, the image's text made harmless.
    assert '  Entrypoint: (none)\n  Cmd: ["httpd", "-p", "80"]\n' in out
    assert '  Env: ["A=\\u001b[2Jb"]\n  WorkingDir: /srv\n  User: (none)\n' in out


def _bad_layouts(tmp_path: Path) -> dict[str, str]:
    """Sources for each kind of bad input."""
    sources: dict[str, str] = {}
    ok = write_layout(tmp_path / "ok", [[file("a", b"x")]])
    sources["ok"] = f"oci:{ok.path}"
    sources["ok_dir"] = str(ok.path)
    sources["index"] = str(ok.path / "index.json")

    tampered = write_layout(tmp_path / "tampered", [[file("a", b"content" * 1000)]])
    blob = tampered.path / "blobs/sha256" / tampered.layer_digests[0].split(":")[1]
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x55
    blob.write_bytes(bytes(data))
    sources["tampered"] = f"oci:{tampered.path}"

    trunc = tmp_path / "trunc.tar.gz"
    trunc.write_bytes(gzip.compress(layer_tar([file("a", bytes(range(256)) * 400)]))[:-64])
    sources["truncated"] = f"tar:{trunc}"

    bad_json = write_layout(tmp_path / "badjson", [[file("a")]])
    index = json.loads((bad_json.path / "index.json").read_text())
    digest = index["manifests"][0]["digest"].split(":")[1]
    (bad_json.path / "blobs/sha256" / digest).write_bytes(b"{not json")
    # The blob no longer matches its digest; make the index point at the new bytes.
    import hashlib

    new = hashlib.sha256(b"{not json").hexdigest()
    (bad_json.path / "blobs/sha256" / new).write_bytes(b"{not json")
    index["manifests"][0]["digest"] = "sha256:" + new
    index["manifests"][0]["size"] = len(b"{not json")
    (bad_json.path / "index.json").write_text(json.dumps(index))
    sources["malformed"] = f"oci:{bad_json.path}"

    escape = write_layout(tmp_path / "escape", [[file("../../etc/evil", b"x")]])
    sources["escape"] = f"oci:{escape.path}"
    dangling = write_layout(tmp_path / "dangling", [[hardlink("b", "nowhere")]])
    sources["dangling"] = f"oci:{dangling.path}"
    arm = write_layout(tmp_path / "arm", [[file("a")]], platform="linux/arm64")
    sources["arm-only"] = f"oci:{arm.path}"
    return sources


@pytest.mark.parametrize(
    ("case", "args", "message"),
    [
        ("unknown transport", ["ftp://example/x"], r"unknown transport 'ftp' in 'ftp://example/x'"),
        ("unknown transport", ["dir:/tmp/x"], r"transport dir: is not supported"),
        ("misspelt transport", ["oci-archve:/x.tar"], r"did you mean oci-archive:\?"),
        ("misspelt transport", ["docker-archve:x.tar"], r"did you mean docker-archive:\?"),
        ("transport case", ["OCI:/tmp/x"], r"transports are lowercase: oci:/tmp/x$"),
        # docker refuses an uppercase name as such; it was taken for a transport.
        ("uppercase", ["Debian:12"], r"repository name \(library/Debian\) must be lowercase"),
        ("uppercase", ["localhost:5000/App:1"], r"repository name \(App\) must be lowercase"),
        ("digest", ["debian@SHA256:" + "a" * 64], r"malformed image reference 'debian@SHA256:"),
        ("missing tag", ["{ok}:nosuchtag"], r"no image tagged 'nosuchtag' in the layout"),
        ("missing path", ["oci:/nonexistent/layout"], r"/nonexistent/layout: no such file"),
        # A name no file can have (ENAMETOOLONG, not ENOENT: pathlib raised it).
        ("long name", ["oci:/tmp/" + "n" * 300 + ":tag"], r"/tmp/n{300}: no such file"),
        ("long name", ["docker-archive:/tmp/" + "n" * 300], r"/tmp/n{300}: no such file"),
        ("long tag", ["{ok}:" + "t" * 300], r"no image tagged 't{300}' in the layout"),
        # A file's name is no image's, even where it parses as a reference.
        ("disk name", ["debain.qcow2"], r"^oci2vm: error: debain.qcow2: no such file or dir"),
        ("path", ["/nonexistent/disk.img"], r"/nonexistent/disk.img: no such file or directory"),
        ("directory", ["{ok_dir}"], r" is a directory: for an OCI image layout, write oci:/"),
        ("file", ["{index}"], r"index.json: name what it holds: docker-archive:/"),
        ("tampered", ["{tampered}"], r"digest mismatch: expected sha256:"),
        ("truncated", ["{truncated}"], r"truncated gzip stream"),
        ("malformed", ["{malformed}"], r"malformed manifest sha256:[0-9a-f]+: not valid JSON"),
        ("escape", ["{escape}"], r"entry '../../etc/evil' escapes the image root"),
        ("dangling", ["{dangling}"], r"hardlink '/b' points to '/nowhere', which does not exist"),
        (
            "platform",
            ["{arm-only}", "--platform", "linux/amd64"],
            r"the image config says linux/arm64, not linux/amd64: pass --platform linux/arm64",
        ),
    ],
)
def test_bad_input_is_one_line_error_and_exit_1(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: str,
    args: list[str],
    message: str,
) -> None:
    sources = _bad_layouts(tmp_path)
    argv = [a.format(**sources) for a in args]
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code, out, err = run_cli(capsys, "inspect", *argv, "--cache-dir", str(tmp_path / "cache"))
    assert code == 1, (case, out, err)
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("oci2vm: error: ")
    import re

    assert re.search(message, lines[0]), lines[0]
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if "cache" not in p.parts)
    assert after == before, "inspect left files behind"


def test_console_script_runs(tmp_path: Path) -> None:
    write_layout(tmp_path / "img", [[file("a", b"x")]])
    proc = subprocess.run(
        [sys.executable, "-m", "oci2vm.cli", "inspect", "--json", f"oci:{tmp_path / 'img'}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["entries"]["file"] == 1
    bad = subprocess.run(
        [sys.executable, "-m", "oci2vm.cli", "inspect", "nosuch:thing/x"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 1
    assert bad.stderr.startswith("oci2vm: error: unknown transport 'nosuch'")


def _stderr_on_a_terminal(argv: list[str], columns: int = 120) -> tuple[int, str]:
    """Run the CLI with stderr on a pseudo-terminal; return its exit code and what the
    terminal showed."""
    import os
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "oci2vm.cli", *argv],
        stdout=subprocess.DEVNULL,
        stderr=slave,
        env={**os.environ, "COLUMNS": str(columns), "TERM": "xterm"},
    )
    os.close(slave)
    shown = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        shown += chunk
    os.close(master)
    return proc.wait(), shown.decode(errors="replace")


def test_progress_shows_layers_on_a_terminal_and_not_with_quiet(tmp_path: Path) -> None:
    big = bytes(range(256)) * 40_000  # ~10 MB, so the bar is drawn at least once
    write_layout(tmp_path / "img", [[file("a", big)], [file("b", big[::-1])]])
    source = f"oci:{tmp_path / 'img'}"
    code, shown = _stderr_on_a_terminal(["build", source, "-o", str(tmp_path / "r.ext4")])
    assert code == 0, shown
    assert "layer 1/2" in shown and "layer 2/2" in shown
    code, shown = _stderr_on_a_terminal(["build", source, "-q", "-o", str(tmp_path / "q.ext4")])
    assert code == 0
    assert shown == ""


def test_a_progress_row_stays_one_line_on_a_narrow_terminal(tmp_path: Path) -> None:
    """A row wider than the terminal was wrapped (its byte count on a second line)."""
    big = bytes(range(256)) * 40_000
    write_layout(tmp_path / "img", [[file("a", big)]])
    argv = ["build", f"oci:{tmp_path / 'img'}", "-o", str(tmp_path / "r.ext4")]
    code, shown = _stderr_on_a_terminal(argv, columns=40)
    assert code == 0, shown
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown).replace("\r", "\n")
    rows = [line for line in text.split("\n") if "layer 1/1" in line]
    # a row ends with its byte count, its time left (-:--:-- before a speed is
    # known, h:mm:ss after), or the ellipsis where it was cut
    whole = re.compile(r"(KiB|MiB|-:--:--|\d+:\d\d:\d\d|…)$")
    assert rows and all(whole.search(line.rstrip()) for line in rows), rows
    assert all(len(line.rstrip()) <= 40 for line in text.split("\n")), text
