"""docker run's options as oci2vm reads them: the command after '--', -e and --env-file,
-p and -v, --memory sizes, and the kernel, initrd and init choices."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from oci2vm.cli import config_from, main, parse
from oci2vm.commands.boot import make_volume_dirs, pick_host_ports, publish_exposed, run_command
from oci2vm.config import InitMode, InitrdChoice, KernelKind, PortMapping, PullPolicy, Volume
from oci2vm.errors import Oci2vmError
from oci2vm.report import Reporter


def test_the_command_after_dashes_replaces_cmd_wherever_the_options_are() -> None:
    config = config_from(parse(["run", "-e", "A=1", "img", "--", "sh", "-c", "exit 7", "--"]))
    assert config.command == ("sh", "-c", "exit 7", "--")
    assert config_from(parse(["build", "img", "-o", "x.img", "--", "true"])).command == ("true",)
    assert config_from(parse(["run", "img"])).command is None


def test_a_command_after_dashes_is_refused_where_nothing_runs() -> None:
    with pytest.raises(SystemExit):
        parse(["inspect", "img", "--", "true"])


def test_env_files_then_options_with_comments_and_host_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As docker/cli reads them: a byte order mark, a CR before LF and leading whitespace
    dropped, values kept as they are (a form feed, U+2028 and a trailing space included),
    a KEY alone from this environment; unset here, an option's stays bare (to unset the
    image's) and a file's is left out (the image's stays: docker/cli's parseKeyValueFile)."""
    env_file = tmp_path / "env"
    text = "\ufeff# a comment\r\n\n  A=from-file \r\nFROM_HOST\nUNSET_HERE\nB=x\fy\u2028z"
    env_file.write_bytes(text.encode())
    monkeypatch.setenv("FROM_HOST", "host value")
    monkeypatch.delenv("UNSET_HERE", raising=False)
    words = ["run", "--env-file", str(env_file), "-e", "A=option", "-e", "UNSET_HERE", "img"]
    config = config_from(parse(words))
    assert config.env == (
        "A=from-file ", "FROM_HOST=host value", "B=x\fy\u2028z", "A=option", "UNSET_HERE",
    )  # fmt: skip


def test_a_malformed_environment_setting_is_refused(tmp_path: Path) -> None:
    """docker checks -e's name for emptiness only; an env file's may hold no blank."""
    from oci2vm.errors import Oci2vmError

    with pytest.raises(Oci2vmError, match="no variable name"):
        config_from(parse(["run", "-e", "=x", "img"]))
    assert config_from(parse(["run", "-e", "A B=1", "img"])).env == ("A B=1",)
    env_file = tmp_path / "env"
    for text, words in ((b"OK=1\nA B=1\n", "line 2: variable 'A B' contains whitespace"),
                        (b"=1\n", "line 1: no variable name"),
                        (b"A=\xff\n", "line 1 is not UTF-8")):  # fmt: skip
        env_file.write_bytes(text)
        with pytest.raises(Oci2vmError, match=words):
            config_from(parse(["run", "--env-file", str(env_file), "img"]))


@pytest.mark.parametrize(
    ("text", "mapping"),
    [
        ("8080:80", PortMapping(8080, 80)),
        ("0.0.0.0:8080:80", PortMapping(8080, 80, "0.0.0.0")),
        ("8053:53/udp", PortMapping(8053, 53, protocol="udp")),
        ("80", PortMapping(0, 80)),  # a free host port, picked when the run starts
        ("10.0.0.1::53/udp", PortMapping(0, 53, "10.0.0.1", "udp")),
        ("5000-5000:6000", PortMapping(5000, 6000)),
    ],
)
def test_published_ports(text: str, mapping: PortMapping) -> None:
    assert config_from(parse(["run", "-p", text, "img"])).publish == (mapping,)


def test_published_port_ranges_forward_port_by_port() -> None:
    config = config_from(parse(["run", "-p", "8000-8002:9000-9002", "-p", "7000-7001", "img"]))
    assert config.publish == (
        PortMapping(8000, 9000), PortMapping(8001, 9001), PortMapping(8002, 9002),
        PortMapping(0, 7000), PortMapping(0, 7001),
    )  # fmt: skip


def test_host_ports_left_out_are_picked_free_and_told(capsys: pytest.CaptureFixture[str]) -> None:
    config = config_from(parse(["run", "-p", "80", "-p", "8000:8080", "img"]))
    picked = pick_host_ports(config, Reporter()).publish
    assert picked[1] == PortMapping(8000, 8080)
    assert picked[0].guest_port == 80 and 1024 < picked[0].host_port < 65536
    assert f"-p: 127.0.0.1:{picked[0].host_port} -> 80/tcp\n" in capsys.readouterr().err


@pytest.mark.parametrize(
    "text",
    ["x:80", "8080:0", "8080:80/sctp", "1:2:3:4", "[::1]:8080:80", "::1:8080:80", "90-80",
     "8000-8001:80", "8000:80-81", "80-", "-80"],
)  # fmt: skip
def test_malformed_ports_are_refused(text: str) -> None:
    with pytest.raises(SystemExit):
        parse(["run", "-p", text, "img"])


def test_volumes_need_a_host_directory_and_an_absolute_guest_path(tmp_path: Path) -> None:
    config = config_from(parse(["run", "-v", f"{tmp_path}:/data:ro", "img"]))
    assert config.volumes == (Volume(tmp_path.resolve(), "/data", True),)
    for bad in (f"{tmp_path}:data", f"{tmp_path}:/d:rx"):
        with pytest.raises(SystemExit):
            parse(["run", "-v", bad, "img"])


def test_a_missing_host_directory_is_made_when_the_run_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docker run -v makes a missing host directory (--mount type=bind refuses it)."""
    monkeypatch.chdir(tmp_path)
    config = config_from(parse(["run", "-v", "./new/deep:/data", "img"]))
    assert config.volumes == (Volume(tmp_path / "new/deep", "/data", create=True),)
    assert not (tmp_path / "new").exists()  # not while the command line is read
    make_volume_dirs(config)
    assert (tmp_path / "new/deep").is_dir()
    make_volume_dirs(config)  # (made already: nothing to do)
    (tmp_path / "file").write_text("x")
    blocked = config_from(parse(["run", "-v", f"{tmp_path}/file/sub:/data", "img"]))
    with pytest.raises(Oci2vmError, match="file/sub: cannot make it"):
        make_volume_dirs(blocked)


def test_a_bare_name_is_a_named_volume_and_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    with pytest.raises(SystemExit):
        parse(["run", "-v", "data:/data", "img"])
    assert "'data' would be a named volume" in capsys.readouterr().err
    config = config_from(parse(["run", "-v", "./data:/data", "img"]))
    assert config.volumes == (Volume(tmp_path / "data", "/data"),)


def test_run_pulls_what_the_cache_lacks_as_docker_run_and_build_asks_each_time() -> None:
    assert config_from(parse(["run", "img"])).pull is PullPolicy.MISSING
    assert config_from(parse(["build", "img", "-o", "x.img"])).pull is PullPolicy.ALWAYS
    assert config_from(parse(["run", "--pull", "always", "img"])).pull is PullPolicy.ALWAYS
    assert config_from(parse(["build", "--pull=never", "img", "-o", "x"])).pull is PullPolicy.NEVER
    with pytest.raises(SystemExit):
        parse(["run", "--pull", "sometimes", "img"])


def test_memory_in_mib_or_with_a_unit() -> None:
    assert config_from(parse(["run", "--memory", "512", "img"])).memory_mib == 512
    assert config_from(parse(["run", "--memory", "2G", "img"])).memory_mib == 2048
    assert config_from(parse(["run", "-m", "512m", "img"])).memory_mib == 512  # docker's -m
    with pytest.raises(SystemExit):
        parse(["run", "--memory", "1", "img"])


def test_publish_all_forwards_each_exposed_port_not_published_already(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """docker run -P: every ExposedPorts entry from a free host port; -p's own stay."""
    config = config_from(parse(["run", "-P", "-p", "8000:8080", "img"]))
    assert config.publish_all
    exposed = ("8080/tcp", "53/udp", "9000", "7000/sctp")
    published = publish_exposed(config, exposed, Reporter()).publish
    assert published[0] == PortMapping(8000, 8080)
    assert [(p.guest_port, p.protocol, p.host_ip) for p in published[1:]] == [
        (53, "udp", "127.0.0.1"),
        (9000, "tcp", "127.0.0.1"),
    ]
    assert all(1024 < p.host_port < 65536 for p in published[1:])
    err = capsys.readouterr().err
    assert f"-P: 127.0.0.1:{published[1].host_port} -> 53/udp\n" in err
    assert "exposes '7000/sctp', which QEMU cannot forward" in err
    assert publish_exposed(config_from(parse(["run", "img"])), exposed, Reporter()).publish == ()
    publish_exposed(config, (), Reporter())
    assert "-P: the image exposes no port" in capsys.readouterr().err


def test_publish_all_is_refused_for_a_disk(tmp_path: Path) -> None:
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(512))
    with pytest.raises(Oci2vmError, match="-P: a disk keeps no image config"):
        run_command(config_from(parse(["run", "-P", str(disk)])), Reporter())


def test_kernel_initrd_and_init_choices() -> None:
    config = config_from(
        parse(["build", "img", "-o", "x.img", "--kernel", "debian:trixie", "--initrd", "own",
               "--init", "app", "--keyring", "/k.gpg", "--allow-expired-release"])
    )  # fmt: skip
    assert (config.kernel.kind, config.kernel.suite) == (KernelKind.DEBIAN, "trixie")
    assert (config.initrd, config.init) == (InitrdChoice.OWN, InitMode.APP)
    assert config.keyrings == (Path("/k.gpg"),) and config.allow_expired_release


@pytest.mark.parametrize(("word", "meant"), [("debain", "debian"), ("imag", "image"),
                                             ("atuo:1", "auto")])  # fmt: skip
def test_a_kernel_word_misspelt_is_not_taken_for_an_image(
    word: str, meant: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse(["build", "img", "-o", "x.img", "--kernel", word])
    assert f"--kernel {word!r}: did you mean {meant}?" in capsys.readouterr().err
    config = config_from(parse(["build", "img", "-o", "x.img", "--kernel", f"docker://{word}"]))
    assert config.kernel.kind is KernelKind.SOURCE


@pytest.mark.parametrize(
    ("words", "command", "env", "quiet"),
    [
        (["img", "ls", "-l"], ("ls", "-l"), (), False),
        (["-q", "img", "ls", "-q"], ("ls", "-q"), (), True),  # after IMAGE: the command's
        (["-e", "A=1", "img", "sh", "-c", "exit 7"], ("sh", "-c", "exit 7"), ("A=1",), False),
        (["img", "-e", "A=1", "ls"], ("-e", "A=1", "ls"), (), False),  # docker's: the command's
        (["img", "--host", "0.0.0.0"], ("--host", "0.0.0.0"), (), False),  # (no --hostname)
        (["-it", "-eA=1", "img", "env"], ("env",), ("A=1",), False),
        (["--env", "A=1", "--mem", "2G", "img", "true"], ("true",), ("A=1",), False),
        (["--tls-verify", "false", "img", "ls"], ("ls",), (), False),
        (["--entrypoint=", "img", "x"], ("x",), (), False),
        (["img", "ls", "--", "x"], ("ls", "--", "x"), (), False),
        (["-q", "img", "--", "ls"], ("ls",), (), True),
        (["img", "-q", "--", "ls"], ("-q", "--", "ls"), (), False),
        (["img", "-q"], ("-q",), (), False),
        (["img", "--help"], ("--help",), (), False),
        (["--entrypoint", "sh", "img", "-c", "exit 7"], ("-c", "exit 7"), (), False),
        (["img", "--bogus", "-q"], ("--bogus", "-q"), (), False),
        (["img", "-ix"], ("-ix",), (), False),  # -x is no option of run's
    ],
)
def test_run_takes_the_command_after_the_image_as_docker_run_does(
    words: list[str], command: tuple[str, ...] | None, env: tuple[str, ...], quiet: bool
) -> None:
    config = config_from(parse(["run", *words]))
    assert (config.source, config.command, config.env, config.quiet) == (
        "img",
        command,
        env,
        quiet,
    )


def test_an_unknown_option_before_the_image_is_still_an_error() -> None:
    with pytest.raises(SystemExit):
        parse(["run", "--bogus", "img", "ls"])


def test_an_ambiguous_option_before_the_image_is_argparses_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):  # --net: --network or --network-timeout
        parse(["run", "--net", "none", "img", "ls"])
    assert "ambiguous option: --net" in capsys.readouterr().err


def test_build_takes_no_command_after_the_image() -> None:
    """A word after build's SOURCE is a slip (a forgotten -o), not a command to bake in."""
    with pytest.raises(SystemExit):
        parse(["build", "img", "out.qcow2", "-o", "x.img"])


def test_run_fails_itself_with_dockers_status_and_build_with_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = f"oci:{tmp_path / 'nothing'}:latest"
    assert main(["run", "-q", missing]) == 125  # (the workload's statuses are its own)
    assert main(["run", "-e", "=x", missing]) == 125
    with pytest.raises(SystemExit) as usage:
        main(["run", "--no-such-option", missing])
    assert usage.value.code == 125
    assert main(["build", "-q", "-o", str(tmp_path / "out.img"), missing]) == 1
    with pytest.raises(SystemExit) as usage:
        main(["build", "--no-such-option", missing])
    assert usage.value.code == 2
    assert "no such file or directory" in capsys.readouterr().err


def test_tmpfs_add_host_read_only_and_stop_signal_reach_the_config() -> None:
    words = ["run", "--tmpfs", "/a", "--tmpfs", "/b:size=1m", "--add-host", "db:10.0.0.5",
             "--read-only", "--stop-signal", "INT", "--stop-timeout", "-1",
             "--ulimit", "nofile=10:20", "--ulimit", "nproc=5", "img"]  # fmt: skip
    config = config_from(parse(words))
    assert config.ulimits == ("nofile=10:20", "nproc=5")
    assert config.stop_timeout == -1
    assert (config.tmpfs, config.add_hosts) == (("/a", "/b:size=1m"), ("db:10.0.0.5",))
    assert (config.read_only, config.stop_signal) == (True, "INT")


def test_mount_long_form_for_binds_and_tmpfs(tmp_path: Path) -> None:
    from oci2vm.config import Volume

    words = ["run", "-v", f"{tmp_path}:/a",
             "--mount", f"type=bind,source={tmp_path},target=/b,readonly",
             "--mount", f"type=bind,src={tmp_path},dst=/c,bind-propagation=rprivate",
             "--mount", "type=tmpfs,destination=/t,tmpfs-size=64m,tmpfs-mode=1770",
             "--mount", "type=tmpfs,target=/u", "img"]  # fmt: skip
    args = parse(words)
    config = config_from(args)
    assert config.volumes == (
        Volume(tmp_path.resolve(), "/a"),
        Volume(tmp_path.resolve(), "/b", True),
        Volume(tmp_path.resolve(), "/c"),
    )
    assert config.tmpfs == ("/t:size=64m,mode=1770", "/u")
    assert config_from(args) == config  # the parsed options are read, not extended


@pytest.mark.parametrize(
    ("mount", "words"),
    [
        ("type=volume,source=data,target=/data", "type=volume is not supported"),
        ("source=data,target=/data", "type=volume is not supported"),
        ("type=bind,source=/nonexistent-dir,target=/x", "/nonexistent-dir does not exist"),
        ("type=bind,target=/x", "takes source, target and readonly"),
        ("type=tmpfs,target=relative", "must be an absolute path"),
        ("type=tmpfs,target=/x,tmpfs-bogus=1", "takes target, tmpfs-size and tmpfs-mode"),
        ("type=bind,/x", "expected KEY=VALUE"),
    ],
)
def test_a_mount_oci2vm_cannot_make_is_refused_in_one_line(
    mount: str, words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse(["run", "--mount", mount, "img"])
    assert words in capsys.readouterr().err


def test_dns_options_reach_the_spec_as_docker_takes_them(
    capsys: pytest.CaptureFixture[str],
) -> None:
    words = ["run", "--dns", "1.1.1.1", "--dns", "2001:db8::1", "--dns-search", ".",
             "--dns-option", "ndots:2", "img"]  # fmt: skip
    config = config_from(parse(words))
    assert (config.dns, config.dns_search, config.dns_options) == (
        ("1.1.1.1", "2001:db8::1"),
        (".",),
        ("ndots:2",),
    )
    assert {"--dns", "--dns-search", "--dns-option"} <= set(config.workload_options())
    for bad in (["--dns", "dns.google"], ["--dns-search", "a b"], ["--dns-option", "x;y"]):
        with pytest.raises(SystemExit):
            parse(["run", *bad, "img"])
    assert "--dns dns.google: not an IP address" in capsys.readouterr().err


def test_privileged_and_cap_add_are_accepted_with_a_note_and_cap_drop_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The VM's workload has what --privileged and --cap-add ask for already; --cap-drop
    would take away what nothing here can."""
    config = config_from(parse(["run", "--privileged", "--cap-add", "net_admin", "img"]))
    assert config.privileged and config.cap_add == ("NET_ADMIN",)
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(512))
    with pytest.raises(Oci2vmError, match="-P: a disk"):  # (after the note)
        run_command(
            config_from(parse(["run", "--cap-add", "SYS_ADMIN", "-P", str(disk)])), Reporter()
        )
    assert (
        "--cap-add SYS_ADMIN: nothing to do, the workload runs on a kernel"
        in capsys.readouterr().err
    )
    with pytest.raises(SystemExit):
        parse(["run", "--cap-drop", "ALL", "img"])
    assert "--cap-drop ALL: not supported" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse(["run", "--cap-add", "net admin", "img"])


@pytest.mark.parametrize(
    ("words", "said"),
    [
        (["--add-host", "foo"], "--add-host 'foo'"),
        (["--ulimit", "nofile=abc"], "--ulimit 'nofile=abc'"),
        (["--tmpfs", "relative"], "--tmpfs 'relative'"),
        (["--stop-signal", "SIGFOO"], "SIGFOO"),
    ],
)
def test_workload_options_that_need_no_image_are_checked_as_the_line_is_read(
    words: list[str], said: str
) -> None:
    """Before a pull or a kernel download, not after them."""
    with pytest.raises(Oci2vmError, match=re.escape(said)):
        config_from(parse(["build", "img", "-o", "x.img", *words]))
