"""oci2vm run's cache key: every build option that shapes the cached root changes it,
file options by their content (an edited file must not boot the old root), the
workload's options do not."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from oci2vm.config import Config, NetworkChoice
from oci2vm.runcache import run_key

DIGEST = "sha256:" + "ab" * 32


def test_file_options_key_by_content_not_name(tmp_path: Path) -> None:
    data = tmp_path / "user-data"
    data.write_text("#cloud-config\n")
    key = tmp_path / "id.pub"
    key.write_text("ssh-ed25519 AAAA one\n")
    config = Config(cloud_init=data, ssh_keys=(key,), user_ssh_keys=(("tester", key),))
    before = run_key(config, DIGEST)
    assert run_key(config, DIGEST) == before
    data.write_text("#cloud-config\npackages: [curl]\n")
    after_data = run_key(config, DIGEST)
    key.write_text("ssh-ed25519 AAAA two\n")
    assert len({before, after_data, run_key(config, DIGEST)}) == 3


def test_network_and_image_change_the_key_the_workload_does_not() -> None:
    base = Config()
    static = dataclasses.replace(base, network=NetworkChoice.parse("static:10.0.2.20/24,10.0.2.2"))
    workload = dataclasses.replace(base, command=("sh", "-c", "true"), env=("A=1",))
    assert run_key(static, DIGEST) != run_key(base, DIGEST)
    assert run_key(base, "sha256:" + "cd" * 32) != run_key(base, DIGEST)
    assert run_key(workload, DIGEST) == run_key(base, DIGEST)


def test_an_unreadable_file_keys_by_its_name(tmp_path: Path) -> None:
    config = Config(cloud_init=tmp_path / "missing")
    other = Config(cloud_init=tmp_path / "also-missing")
    assert run_key(config, DIGEST) != run_key(other, DIGEST)


def test_an_image_without_init_shares_its_root_between_auto_and_app(tmp_path: Path) -> None:
    """A run with a command asks for app mode, one without for --init auto: for an image
    without an init both build the same root, so the entry made for one serves the other
    (a link), and the second never rebuilds it. With an init they are two roots."""
    from oci2vm.config import InitMode
    from oci2vm.runcache import _link_twin
    from oci2vm.tree.osinfo import InitSystem, OsInfo

    no_init = OsInfo(os_release={}, kernels=(), init=InitSystem.NONE, init_path=None)
    with_init = dataclasses.replace(no_init, init=InitSystem.BUSYBOX, init_path="/sbin/init")
    for mode, other in ((InitMode.APP, InitMode.AUTO), (InitMode.AUTO, InitMode.APP)):
        run = tmp_path / mode.value / "run"
        config = Config(init=mode)
        entry = run / run_key(config, "sha256:img")
        entry.mkdir(parents=True)
        _link_twin(config, "sha256:img", entry, no_init)
        twin = run / run_key(dataclasses.replace(config, init=other), "sha256:img")
        assert twin.is_symlink() and twin.resolve() == entry.resolve()
        _link_twin(config, "sha256:img", entry, no_init)  # again: nothing changes
        assert sorted(run.iterdir()) == sorted([entry, twin])
    run = tmp_path / "init" / "run"
    entry = run / run_key(Config(init=InitMode.APP), "sha256:img")
    entry.mkdir(parents=True)
    _link_twin(Config(init=InitMode.APP), "sha256:img", entry, with_init)
    _link_twin(Config(init=InitMode.SYSTEM), "sha256:img", entry, no_init)
    assert list(run.iterdir()) == [entry]
