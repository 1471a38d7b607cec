"""`oci2vm run SOURCE` behaving like `docker run`, through the CLI in a child process
(QEMU, TCG): the busybox-app fixture's httpd reached over a published loopback port and
stopped by Ctrl-C with docker's exit status; a workload's stdout, stderr and exit status
apart from the kernel's messages; a second run served from the run cache without a
rebuild; a Debian minbase image (no init) in app mode; an image with an init running a
command as docker run would; and docker run's workload options (-e, -w, -u, --entrypoint,
-v, -v :ro).

Kernel packages and run caches live in the shared fixture store (support.debarchives),
so reruns and other tests reuse them; the cache test alone starts from an empty run/."""

from __future__ import annotations

import contextlib
import os
import pty
import re
import select
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from fixture_images import (
    BUSYBOX_APP_INDEX_HTML,
    FixtureSet,
    busybox_app_fixture,
    busybox_init_fixture,
    debian_minbase_fixture,
)
from support.debarchives import configured_mirror, fixture_store
from support.programs import requires
from support.runcli import (
    OCI2VM,
    RUN_TIMEOUT,
    cache_sharing_downloads,
    child_env,
    fetch_when_served,
    files_state,
    free_port,
    oci2vm,
    skip_unless_buildable,
    start,
)

pytestmark = [pytest.mark.qemu, pytest.mark.fixture, requires("qemu-system-x86_64")]

STOP_SECONDS = 30.0  # Ctrl-C to exit: the init's grace is 10 s, QEMU's poweroff a few more
GRACE_SECONDS = 10.0  # from Ctrl-C to the VM killed
SCRIPT = 'echo "$SOME_ENV_FROM_CONFIG"; id -u; pwd; echo err >&2; exit 7'


def source(fx: FixtureSet) -> str:
    return f"oci:{fx.oci_layout}:{fx.tag}"


def run_options(cache: Path | None = None) -> list[str]:
    root = cache or fixture_store().root
    return ["--cache-dir", str(root), "--mirror", configured_mirror(), "--accel", "tcg",
            "--memory", "512"]  # fmt: skip


@pytest.fixture(scope="module")
def app() -> str:
    return source(busybox_app_fixture())


def test_published_port_serves_the_page_and_ctrl_c_stops_like_docker(app: str) -> None:
    port = free_port()
    proc = start("run", *run_options(), "-p", f"127.0.0.1:{port}:8080", app)
    try:
        body = fetch_when_served(f"http://127.0.0.1:{port}/", proc, RUN_TIMEOUT)
        assert body.decode() == BUSYBOX_APP_INDEX_HTML
        stopped = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=STOP_SECONDS + 30)
        took = time.monotonic() - stopped
    finally:
        proc.kill()
    # docker run's signal proxy passes the SIGINT on, and httpd ends by it: `docker run`
    # exits with the workload's status, 128 + 2, reported well before the grace (10 s)
    # after which oci2vm would kill the VM and answer 130 itself.
    assert proc.returncode == 128 + signal.SIGINT, err.decode()
    assert took < GRACE_SECONDS - 1


def test_a_detached_run_serves_is_listed_logged_stopped_and_removed_as_dockers(
    app: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docker run -d, ps, logs, stop, wait, rm: the command returns once the VM starts,
    printing the run's name; its output is kept; a stop ends httpd by its SIGTERM."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    port = free_port()
    started = oci2vm("run", "-d", "--name", "web", "-p", f"127.0.0.1:{port}:8080",
                     *run_options(), app)  # fmt: skip
    try:
        assert (started.code, started.out) == (0, "web\n"), started.err
        listed = oci2vm("ps")
        row = rf"^web +up \d+ seconds +127\.0\.0\.1:{port} -> 8080/tcp +oci:"
        assert re.search(row, listed.out, re.M), listed.out
        body = fetch_when_served(f"http://127.0.0.1:{port}/", None, RUN_TIMEOUT)
        assert body.decode() == BUSYBOX_APP_INDEX_HTML
        taken = oci2vm("run", "-d", "--name", "web", *run_options(), app)
        assert (taken.code, taken.err) == (125, "oci2vm: error: the name 'web' is taken by "
                                           "another run: `oci2vm rm web` removes it\n")  # fmt: skip
        assert oci2vm("rm", "w").code == 1  # running: refused (a beginning names it)
        logs = oci2vm("logs", "web")
        assert "response:200" in logs.err, logs  # httpd's log of the request, on stderr
        stopped = oci2vm("stop", "web", timeout=GRACE_SECONDS + 60)
        assert (stopped.code, stopped.out) == (0, "web\n"), stopped.err
        assert oci2vm("ps", "-q").out == ""
        assert re.search(r"^web +exited \(143\)", oci2vm("ps", "-a").out, re.M)
        assert oci2vm("wait", "web").out == "143\n"  # httpd's end by SIGTERM, as docker's
        assert oci2vm("rm", "web").out == "web\n"
        assert oci2vm("ps", "-aq").out == ""
    finally:
        oci2vm("rm", "-f", "web")


def test_publish_all_forwards_the_exposed_port_from_a_free_one_told_on_stderr(app: str) -> None:
    """docker run -P: busybox-app exposes 8080/tcp; the host port is the kernel's pick."""
    proc = start("run", *run_options(), "-P", app)
    try:
        assert proc.stderr is not None
        lines = iter(proc.stderr.readline, b"")  # (up to the note: the VM runs on)
        line = next((line for line in lines if line.startswith(b"-P: ")), b"(none)")
        match = re.fullmatch(rb"-P: 127\.0\.0\.1:(\d+) -> 8080/tcp\n", line)
        assert match, line
        body = fetch_when_served(f"http://127.0.0.1:{int(match[1])}/", proc, RUN_TIMEOUT)
        assert body.decode() == BUSYBOX_APP_INDEX_HTML
    finally:
        proc.kill()
        proc.wait()


def test_a_second_run_reuses_the_cached_root_without_rebuilding(app: str, tmp_path: Path) -> None:
    cache = cache_sharing_downloads(fixture_store().root, tmp_path / "cache")
    first = oci2vm("run", *run_options(cache), app, "--", "sh", "-c", SCRIPT)
    assert (first.code, first.out) == (7, "value-from-config\n1000\n/app\n"), first.err
    # Built on the way: the note of the kernel it injected comes before the workload's.
    assert first.err.startswith("injected linux-image-"), first.err
    assert first.err.endswith("with oci2vm's initramfs (app mode)\nerr\n"), first.err
    entries = sorted((cache / "run").iterdir())
    (entry,) = [p for p in entries if not p.is_symlink()]
    # A command asks for app mode; without one, --init auto builds the same root for an
    # image without an init: the entry serves both keys.
    (twin,) = [p for p in entries if p.is_symlink()]
    assert twin.resolve() == entry.resolve()
    before = files_state(entry)
    assert {"root.ext4", "initrd.img", "run.json", "vmlinuz"} <= set(before)

    second = oci2vm("run", *run_options(cache), app, "--", "sh", "-c", SCRIPT)
    assert (second.code, second.out, second.err) == (7, "value-from-config\n1000\n/app\n", "err\n")
    assert sorted((cache / "run").iterdir()) == entries
    # Not rewritten (same contents and mtimes), and no kernel note: nothing was built again.
    # How much faster that makes the run is a benchmark's business, not a timed test's.
    assert files_state(entry) == before


def test_run_i_takes_stdin_from_a_file_or_dev_null_as_docker_run_i_does(
    app: str, tmp_path: Path
) -> None:
    """epoll watches neither a regular file nor /dev/null: `run -i IMG wc -c < FILE`
    (a traceback before) reads the file to its end, and /dev/null is an empty stdin."""
    data = tmp_path / "in.txt"
    data.write_bytes(b"x" * 200_000 + b"\n")
    with open(data, "rb") as stdin:
        from_file = oci2vm("run", *run_options(), "-i", app, "busybox", "wc", "-c", stdin=stdin)
    assert (from_file.code, from_file.out.split()) == (0, ["200001"]), from_file.err
    empty = oci2vm("run", *run_options(), "-i", app, "busybox", "wc", "-c")  # /dev/null
    assert (empty.code, empty.out.split()) == (0, ["0"]), empty.err


def test_the_workload_reopens_its_streams_as_under_docker(app: str, tmp_path: Path) -> None:
    """Its streams are pipes, as docker's are: /dev/stdout, /dev/stderr, /proc/self/fd/1
    and /dev/stdin open again (a virtio port, open once at a time, refused them: nginx
    logs to /dev/stdout through a link)."""
    data = tmp_path / "in.txt"
    data.write_bytes(b"typed\n")
    script = "echo a >/dev/stdout; echo b >/dev/stderr; echo c >/proc/self/fd/1; cat /dev/stdin"
    with open(data, "rb") as stdin:
        done = oci2vm("run", *run_options(), "-q", "-i", app, "sh", "-c", script, stdin=stdin)
    assert (done.code, done.out, done.err) == (0, "a\nc\ntyped\n", "b\n"), done.err


def test_a_slow_reader_gets_every_byte_and_the_exit_status(app: str) -> None:
    """QEMU stops taking a port's data while our socket is full: what the guest still held
    when it powered off was lost (and at times the exit status with it, 125). The guest
    now waits until the host has every byte its exit status counts."""
    size = 3 << 20
    script = f"head -c {size} /dev/zero; echo done >&2; exit 4"
    proc = start("run", *run_options(), "-q", app, "sh", "-c", script)
    assert proc.stdout is not None and proc.stderr is not None
    got = 0
    deadline = time.monotonic() + RUN_TIMEOUT
    while piece := proc.stdout.read(16384):  # ~160 KB/s: far slower than the guest writes
        assert not any(piece)
        got += len(piece)
        time.sleep(0.1)
        assert time.monotonic() < deadline
    err = proc.stderr.read().decode()
    assert (proc.wait(), got) == (4, size), err
    assert err == "done\n"


def test_a_reader_that_goes_away_ends_the_run_as_sigpipe_ends_a_pipeline(app: str) -> None:
    """`oci2vm run IMG yes | head -n1` ran until killed: the output was dropped and the
    VM went on. Now oci2vm ends as a program writing to a closed pipe (and the docker
    client) does: 128 + SIGPIPE, the VM with it."""
    proc = start("run", *run_options(), "-q", app, "sh", "-c", "while :; do echo y; done")
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"y\n"
    proc.stdout.close()
    try:
        code = proc.wait(timeout=120)
    finally:
        proc.kill()
    assert code == 128 + signal.SIGPIPE


def os_release(fx: FixtureSet) -> str:
    with tarfile.open(fx.rootfs_tar) as tar:
        member = tar.extractfile("usr/lib/os-release")  # /etc/os-release links to it
        assert member is not None
        return member.read().decode()


def test_debian_minbase_without_init_runs_a_command_in_app_mode() -> None:
    """The image's programs, found in its PATH as runc finds them: cat and sh are also
    busybox applets of the initramfs, which must not answer in their place."""
    skip_unless_buildable("debian-minbase")
    fx = debian_minbase_fixture()
    script = (
        'cat /etc/os-release; readlink "/proc/$$/exe"; cat --version | head -n 1; '
        "grep SigIgn /proc/self/status; "  # docker's workload starts with no signal ignored
        "ls /run; stat -c %a /tmp"  # the image's own /run and /tmp, as docker leaves them
    )
    result = oci2vm("run", *run_options(), source(fx), "sh", "-c", script)
    expected = (
        os_release(fx) + "/usr/bin/dash\ncat (GNU coreutils) 9.1\nSigIgn:\t0000000000000000\n"
        "lock\nmount\n1777\n"
    )
    assert (result.code, result.out) == (0, expected), result.err
    assert 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n' in result.out
    missing = oci2vm("run", *run_options(), source(fx), "no-such-program")
    assert missing.code == 127
    assert 'exec: "no-such-program": executable file not found in $PATH' in missing.err


def test_an_image_with_an_init_runs_a_command_as_docker_run_does() -> None:
    """alpine's and busybox's images have an init (busybox's, linked from /sbin/init in
    every Alpine-based image: nginx:alpine's too): `docker run IMAGE [CMD]` runs CMD, or
    the image's Cmd, and so does `oci2vm run` (app mode); it booted to a login nobody
    could use. --init system boots the init."""
    fx = busybox_init_fixture()
    result = oci2vm("run", *run_options(), "-e", "WHO=docker", source(fx), "--",
                    "sh", "-c", 'echo "like $WHO"; exit 3')  # fmt: skip
    assert (result.code, result.out) == (3, "like docker\n"), result.err
    own_cmd = oci2vm("run", *run_options(), "-i", source(fx), stdin=subprocess.PIPE)
    assert own_cmd.code == 0, own_cmd.err  # its Cmd, /bin/sh, at the end of its input
    refused = oci2vm("run", *run_options(), "--init", "system", source(fx), "true")
    assert refused.code == 125
    assert "pass --init app" in refused.err


def test_env_workdir_user_entrypoint_and_volumes(app: str, tmp_path: Path) -> None:
    # -v makes a missing host directory, as docker's does
    shared, read_only = tmp_path / "made/by/run", tmp_path / "readonly"
    read_only.mkdir()
    (read_only / "in.txt").write_text("from the host\n")
    (tmp_path / "app.conf").write_text("one file\n")
    script = (
        'echo "$SOME_ENV_FROM_CONFIG $ADDED"; id -u; pwd; echo from-the-guest > /data/out.txt; '
        "cat /ro/in.txt; if echo x > /ro/new.txt; then echo ro-written; else echo ro-refused; fi; "
        "cat /etc/app/app.conf /etc/hostname.conf; echo x >> /etc/hostname.conf || echo refused; "
        "cat /etc/app.yml; echo from-the-guest >> /etc/app.yml; ls /etc/app.yml"
    )
    writable = tmp_path / "conf" / "app.yml"  # a writable single file, beside another
    writable.parent.mkdir()
    writable.write_text("from the host\n")
    (writable.parent / "neighbour").write_text("not shared\n")
    result = oci2vm(
        "run", *run_options(), "-e", "SOME_ENV_FROM_CONFIG=overridden", "-e", "ADDED=1",
        "-w", "/www", "-u", "0", "--entrypoint", "sh",
        "-v", f"{shared}:/data", "--mount", f"type=bind,source={read_only},target=/ro,readonly",
        "-v", f"{tmp_path / 'app.conf'}:/etc/app/app.conf:ro",  # a single file, a new path
        "-v", f"{tmp_path / 'app.conf'}:/etc/hostname.conf:ro",
        "-v", f"{writable}:/etc/app.yml",
        app, "--", "-c", script,
    )  # fmt: skip
    expected = (
        "overridden 1\n0\n/www\nfrom the host\nro-refused\none file\none file\nrefused\n"
        "from the host\n/etc/app.yml\n"
    )
    assert (result.code, result.out) == (0, expected), result.err
    assert "Read-only file system" in result.err
    assert (shared / "out.txt").read_text() == "from-the-guest\n"
    assert writable.read_text() == "from the host\nfrom-the-guest\n"  # the file itself
    assert sorted(os.listdir(writable.parent)) == ["app.yml", "neighbour"]  # nothing left
    assert sorted(p.name for p in read_only.iterdir()) == ["in.txt"]


def test_user_gets_its_supplementary_groups_and_e_key_unsets_like_docker(app: str) -> None:
    """busybox-app's User "app" (1000) is listed in /etc/group's "extra" (1001): docker
    (runc) gives it that group too, unless -u names a group; `-e KEY` with KEY unset where
    docker runs removes the image's KEY. Open files are limited as Docker >= 25 limits
    them (1024:524288), or as --ulimit says, whichever way the workload starts."""
    script = 'echo "[${SOME_ENV_FROM_CONFIG-unset}]"; id -u; id -g; id -G; ulimit -Sn; ulimit -Hn'
    assert "SOME_ENV_FROM_CONFIG" not in os.environ
    result = oci2vm("run", *run_options(), "-e", "SOME_ENV_FROM_CONFIG", app, "sh", "-c", script)
    expected = "[unset]\n1000\n1000\n1000 1001\n1024\n524288\n"
    assert (result.code, result.out) == (0, expected), result.err
    script = "id -G; ulimit -Sn; ulimit -Hn; ulimit -u; exit 4"
    result = oci2vm(
        "run", *run_options(), "-u", "app:app", "--ulimit", "nofile=2048:4096",
        "--ulimit", "nproc=100", app, "sh", "-c", script,
    )  # fmt: skip
    assert (result.code, result.out) == (4, "1000\n2048\n4096\n100\n"), result.err


def test_the_workload_is_pid_1_of_its_own_namespace_as_in_a_container(app: str) -> None:
    """docker's workload is its PID namespace's init: getpid() is 1 (s6-overlay's /init
    refuses to run otherwise), and ps shows its own processes alone (not oci2vm's init,
    its relays and its network client)."""
    script = "echo $$; ps -o pid,comm | tail -n +2"
    result = oci2vm("run", *run_options(), app, "sh", "-c", script)
    assert result.code == 0, result.err
    pid, *processes = result.out.split("\n")[:-1]
    assert pid == "1"
    assert [p.split()[1] for p in processes] == ["sh", "ps", "tail"], result.out


def test_a_stop_ends_a_workload_that_does_not_handle_it_at_once(app: str) -> None:
    """A namespace's init ignores a signal it does not handle (docker stop then waits 10
    s and kills it: 137); oci2vm ends it by the signal as any program would end: 143 at
    once. A workload that handles it (the trap) gets it."""
    for script, status, out in (
        ("echo started; exec sleep 1000", 128 + signal.SIGTERM, "started\n"),
        ('trap "echo bye; exit 9" TERM; echo started; while :; do sleep 1; done', 9,
         "started\nbye\n"),
    ):  # fmt: skip
        proc = start("run", *run_options(), app, "sh", "-c", script)
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == b"started\n"
            stopped = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            rest, err = proc.communicate(timeout=STOP_SECONDS)
            took = time.monotonic() - stopped
        finally:
            proc.kill()
        assert (proc.returncode, "started\n" + rest.decode()) == (status, out), err.decode()
        assert took < GRACE_SECONDS - 1
        assert "Killed" not in err.decode()  # (nothing from the init's shell after it)


class Terminal:
    """`oci2vm run -it ...` on a pseudo-terminal, as a user at a keyboard."""

    def __init__(self, *args: str) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            [*OCI2VM, "run", *args], stdin=slave, stdout=slave, stderr=slave,
            env=child_env(), start_new_session=True,
        )  # fmt: skip
        os.close(slave)
        self.screen = b""

    def wait_for(self, text: bytes, timeout: float = RUN_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.screen:
            assert time.monotonic() < deadline, self.screen[-500:]
            if select.select([self.master], [], [], 0.5)[0]:
                with contextlib.suppress(OSError):
                    self.screen += os.read(self.master, 4096)

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        os.close(self.master)


def test_ctrl_c_on_a_terminal_reaches_the_foreground_as_docker_run_it(app: str) -> None:
    """Under -it the keys go to the guest's terminal, whose ^C signals its foreground
    group: a shell's job ends and the shell goes on; a workload in the foreground that
    does not handle SIGINT ends (the kernel drops that signal for a namespace's init,
    and the workload, its PID 1, ran on with the host's terminal raw)."""
    shell = Terminal(*run_options(), "-it", app, "sh")
    try:
        shell.wait_for(b"$ ")
        shell.type(b"echo pid=$$; sleep 100\r")
        shell.wait_for(b"pid=1")
        time.sleep(1)
        shell.type(b"\x03")
        shell.type(b"echo back$((40+2))\r")
        shell.wait_for(b"back42", 30)
        shell.type(b"exit 3\r")
        assert shell.proc.wait(30) == 3
    finally:
        shell.close()
    sleeper = Terminal(*run_options(), "-it", app, "sh", "-c", "echo ready; exec sleep 100")
    try:
        sleeper.wait_for(b"ready")
        time.sleep(2)  # sh has exec'd sleep (sh itself would end by the ^C: status 130 too)
        stopped = time.monotonic()
        sleeper.type(b"\x03")
        assert sleeper.proc.wait(30) == 128 + signal.SIGINT
        assert time.monotonic() - stopped < GRACE_SECONDS - 1
    finally:
        sleeper.close()


def test_a_missing_or_not_executable_program_fails_with_dockers_status(app: str) -> None:
    """docker run: 127 for a path that is not there, 126 for one that cannot be run (a
    file without x, a directory), whoever the user (busybox-app's has a supplementary
    group, so the workload starts by start-stop-daemon, whose own status would be 1)."""
    for program, code, words in (
        ("/nope", 127, "no such file or directory"),
        ("/etc/passwd", 126, "permission denied"),
        ("/etc", 126, "permission denied"),
    ):
        result = oci2vm("run", *run_options(), app, program)
        assert (result.code, result.out) == (code, ""), result.err
        assert f'exec: "{program}"' in result.err and words in result.err


def test_what_execve_refuses_is_told_as_runc_tells_it(app: str, tmp_path: Path) -> None:
    """A script without its #! line, or whose #! line ends in a carriage return (DOS line
    ends), exists and may be run, but execve refuses it: runc says so on the workload's
    stderr and the container exits 1. busybox's exec would run the first through /bin/sh
    and tell the second as its own "can't execute", status 127."""
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    for name, text in (
        ("plain", b"echo ran through sh\n"),
        ("dos", b"#!/bin/sh\r\necho ran\r\n"),
        ("fine", b"#! /bin/sh -e\necho ran\n"),
    ):
        (scripts / name).write_bytes(text)
        (scripts / name).chmod(0o755)
    for program, words in (
        ("/s/plain", "exec /s/plain: exec format error"),
        ("/s/dos", "exec /s/dos: no such file or directory (its #! line ends in a carriage"),
    ):
        result = oci2vm("run", *run_options(), "-v", f"{scripts}:/s:ro", app, program)
        assert (result.code, result.out) == (1, ""), result.err
        assert words in result.err
    result = oci2vm("run", *run_options(), "-v", f"{scripts}:/s:ro", app, "/s/fine")
    assert (result.code, result.out) == (0, "ran\n"), result.err


def test_a_program_only_root_may_run_is_refused_to_a_user_with_groups(tmp_path: Path) -> None:
    """busybox-app's user app has a supplementary group, so it starts by start-stop-daemon,
    whose own status for an exec it cannot do is 1: docker's is 126, with its message.
    Root runs the same program."""
    from support.layouts import file, layer_tar, write_layout

    base = busybox_app_fixture().rootfs_tar.read_bytes()
    secret = layer_tar([file("secret", b"#!/bin/sh\necho ran\n", mode=0o700)])
    layout = write_layout(tmp_path / "img", [base, secret], compression="none")
    image = f"oci:{layout.path}:latest"
    refused = oci2vm("run", *run_options(), "-u", "app", image, "/secret")
    assert (refused.code, refused.out) == (126, ""), refused.err
    assert 'exec: "/secret": permission denied' in refused.err
    ran = oci2vm("run", *run_options(), "-u", "0", image, "/secret")
    assert (ran.code, ran.out) == (0, "ran\n"), ran.err


def test_read_only_tmpfs_add_host_and_dns_like_docker(app: str) -> None:
    script = (
        "grep -E 'db|gw' /etc/hosts; echo x > /scratch/f && cat /scratch/f; "
        "grep -E ' /(scratch|dev/mqueue) ' /proc/mounts | cut -d' ' -f3; "
        "if touch /new 2>/dev/null; then echo written; else echo read-only; fi; "
        "cat /etc/resolv.conf"
    )
    result = oci2vm(
        "run", *run_options(), "--read-only", "--tmpfs", "/scratch:size=1m",
        "--add-host", "db:10.1.2.3", "--add-host", "gw:host-gateway",
        "--dns", "10.0.2.3", "--dns", "192.0.2.53", "--dns-search", "example.test",
        "--dns-option", "ndots:2", app, "sh", "-c", script,
    )  # fmt: skip
    expected = (
        "10.1.2.3\tdb\n10.0.2.2\tgw\nx\nmqueue\ntmpfs\nread-only\n"
        "search example.test\nnameserver 10.0.2.3\nnameserver 192.0.2.53\noptions ndots:2\n"
    )
    assert (result.code, result.out) == (0, expected), result.err


def test_a_workdir_and_mount_points_through_links_stay_in_the_image(tmp_path: Path) -> None:
    """runc resolves a working directory and a mount point inside the container's root:
    an absolute symlink of the image leads from the image's root, never into the VM's
    initramfs around it (/esc -> /etc/oci2vm is where the init keeps its spec). A working
    directory that cannot be one is docker's status 125. The workload is its PID
    namespace's init: its own SIGKILL does nothing to it, as in a container."""
    from support.layouts import directory, file, layer_tar, symlink, write_layout

    base = busybox_app_fixture().rootfs_tar.read_bytes()
    links = layer_tar([
        directory("srv"), directory("srv/app"), symlink("app2", "/srv/app"),
        symlink("esc", "/etc/oci2vm"), file("afile", b"x"),
    ])  # fmt: skip
    layout = write_layout(tmp_path / "img", [base, links], compression="none")
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "in.txt").write_text("from the host\n")
    image = f"oci:{layout.path}:latest"
    script = "pwd; ls -A; cat /srv/app/data/in.txt; echo bye >&2; kill -9 $$; echo alive"
    result = oci2vm(
        "run", *run_options(), "-u", "0", "-w", "/esc", "-v", f"{shared}:/app2/data",
        image, "sh", "-c", script,
    )  # fmt: skip
    assert (result.code, result.out) == (0, "/etc/oci2vm\nfrom the host\nalive\n"), result.err
    assert result.err.endswith("bye\n")
    refused = oci2vm("run", *run_options(), "-u", "0", "-w", "/afile/sub", image, "true")
    assert (refused.code, refused.out) == (125, ""), refused.err
    assert "/afile/sub as the working directory: not a directory" in refused.err


def test_check_of_an_app_image_waits_for_its_workload_to_start(app: str) -> None:
    """An app shows no login prompt: check's default waits for the init's line that the
    workload started (the disk is built and booted as any hypervisor would boot it)."""
    result = oci2vm("check", *run_options(), "--timeout", "240", app)
    assert result.code == 0, result.err
    assert result.out.startswith("ok: ")
