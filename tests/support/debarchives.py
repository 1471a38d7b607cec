"""Debian archives built inside tests, every byte known to the test: .deb files
(build_deb), and a mirror tree on disk (write_mirror: dists/SUITE/InRelease, the Packages
index, pool/) whose InRelease is signed by a signer the test chooses:

    fake_sign / fake_verify   a stand-in for OpenPGP in unit tests (no program runs): the
                              "signature" is the sha256 of the signed text
    GpgKey                    a throwaway gpg key (integration tests: gpg and gpgv run)
    served                    a mirror tree over HTTP on a loopback port, closed after
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import lzma
import os
import subprocess
import tarfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import zstandard

from oci2vm.errors import Oci2vmError
from oci2vm.image.blobs import BlobStore

ARCH = "amd64"  # Debian's name of oci2vm.arch.Arch.AMD64, the tests' architecture
SUITE = "bookworm"
NOW = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)


def compress(data: bytes, kind: str) -> bytes:
    if kind == "xz":
        return lzma.compress(data, preset=0)
    if kind == "gzip":
        return gzip.compress(data, mtime=0)
    if kind == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    return data


SUFFIX = {"xz": ".xz", "gzip": ".gz", "zstd": ".zst", "none": ""}


def tar_of(files: Mapping[str, bytes]) -> bytes:
    """A tar of regular files (names as dpkg-deb stores them: "./usr/bin/x"), parent
    directories first."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        seen: set[str] = set()
        for name, data in files.items():
            parts = name.split("/")
            for i in range(1, len(parts)):
                directory = "/".join(parts[:i]) + "/"
                if directory not in seen:
                    seen.add(directory)
                    info = tarfile.TarInfo(directory)
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o755, 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def ar_of(members: Sequence[tuple[str, bytes]]) -> bytes:
    out = [b"!<arch>\n"]
    for name, data in members:
        header = f"{name:<16}{0:<12}{0:<6}{0:<6}{0o100644:<8o}{len(data):<10}`\n"
        out += [header.encode(), data, b"\n" if len(data) % 2 else b""]
    return b"".join(out)


def control_text(fields: Mapping[str, str]) -> bytes:
    return "".join(f"{k}: {v}\n" for k, v in fields.items()).encode()


def build_deb(
    name: str,
    version: str,
    files: Mapping[str, bytes],
    *,
    compression: str = "xz",
    extra: Mapping[str, str] | None = None,
) -> bytes:
    """A binary package as dpkg-deb builds it: debian-binary, control.tar.xz, data.tar.*"""
    control = control_text({"Package": name, "Version": version, "Architecture": ARCH,
                            "Maintainer": "Test <t@example.org>", **(extra or {}),
                            "Description": "a test package\n more text"})  # fmt: skip
    return ar_of([
        ("debian-binary", b"2.0\n"),
        ("control.tar.xz", compress(tar_of({"./control": control}), "xz")),
        (f"data.tar{SUFFIX[compression]}", compress(tar_of(files), compression)),
    ])  # fmt: skip


@dataclass
class Pkg:
    """A package of a test mirror: its index fields, and its .deb."""

    name: str
    version: str = "1.0-1"
    files: dict[str, bytes] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)  # Depends, Source, Provides...

    def deb(self) -> bytes:
        return build_deb(self.name, self.version, self.files)

    @property
    def filename(self) -> str:
        return f"pool/main/{self.name[0]}/{self.name}/{self.name}_{self.version}_{ARCH}.deb"


def packages_index(pkgs: Sequence[Pkg], debs: Mapping[str, bytes]) -> bytes:
    paragraphs = []
    for pkg in pkgs:
        deb = debs[pkg.name]
        fields = {"Package": pkg.name, "Version": pkg.version, "Installed-Size": "10",
                  "Architecture": ARCH, **pkg.fields, "Filename": pkg.filename,
                  "Size": str(len(deb)), "SHA256": hashlib.sha256(deb).hexdigest(),
                  "Description": "test"}  # fmt: skip
        paragraphs.append(control_text(fields))
    return b"\n".join(paragraphs)


def release_text(
    suite: str,
    indices: Mapping[str, bytes],
    *,
    date: datetime = NOW,
    valid_until: datetime | None = None,
    by_hash: bool = False,
    architectures: str = f"all {ARCH}",
) -> bytes:
    lines = [f"Origin: Debian\nSuite: stable\nCodename: {suite}\nDate: {format_datetime(date)}\n"]
    if valid_until is not None:
        lines.append(f"Valid-Until: {format_datetime(valid_until)}\n")
    if by_hash:
        lines.append("Acquire-By-Hash: yes\n")
    lines.append(f"Architectures: {architectures}\nComponents: main\nSHA256:\n")
    lines += [f" {hashlib.sha256(d).hexdigest()} {len(d):>8} {p}\n" for p, d in indices.items()]
    return "".join(lines).encode()


def clearsign_frame(text: bytes, signature: bytes) -> bytes:
    escaped = b"".join(
        b"- " + line if line.startswith(b"-") else line for line in text.splitlines(True)
    )
    return (
        b"-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n" + escaped
        + b"-----BEGIN PGP SIGNATURE-----\n\n" + signature
        + b"\n-----END PGP SIGNATURE-----\n"
    )  # fmt: skip


def fake_sign(text: bytes) -> bytes:
    return clearsign_frame(text, hashlib.sha256(text).hexdigest().encode())


def fake_verify(data: bytes, what: str) -> bytes:
    """Accepts what fake_sign made, unchanged; refuses anything else, as gpgv would."""
    _head, _, rest = data.partition(b"\n\n")
    body, _, signature = rest.partition(b"-----BEGIN PGP SIGNATURE-----\n\n")
    text = b"".join(line[2:] if line.startswith(b"- ") else line for line in body.splitlines(True))
    if signature.split(b"\n", 1)[0] != hashlib.sha256(text).hexdigest().encode():
        raise Oci2vmError(f"{what}: BAD signature (fake)")
    return text


Signer = Callable[[bytes], bytes]


@dataclass
class MirrorTree:
    """A test mirror on disk, as write_mirror made it."""

    root: Path
    pkgs: list[Pkg]
    debs: dict[str, bytes]

    @property
    def url(self) -> str:
        return self.root.as_uri()

    def path(self, pkg: str) -> Path:
        return self.root / next(p.filename for p in self.pkgs if p.name == pkg)


def write_mirror(
    root: Path,
    pkgs: Sequence[Pkg],
    *,
    sign: Signer = fake_sign,
    suite: str = SUITE,
    index: str = "xz",
    **release: object,
) -> MirrorTree:
    """A mirror with one suite, component main, architecture ARCH, holding `pkgs`."""
    debs = {p.name: p.deb() for p in pkgs}
    for pkg in pkgs:
        (root / pkg.filename).parent.mkdir(parents=True, exist_ok=True)
        (root / pkg.filename).write_bytes(debs[pkg.name])
    plain = packages_index(pkgs, debs)
    base = f"main/binary-{ARCH}"
    indices = {f"{base}/Packages": plain, f"{base}/Packages{SUFFIX[index]}": compress(plain, index)}
    dists = root / "dists" / suite
    for path, data in indices.items():
        (dists / path).parent.mkdir(parents=True, exist_ok=True)
        (dists / path).write_bytes(data)
        by_hash = dists / base / "by-hash" / "SHA256" / hashlib.sha256(data).hexdigest()
        by_hash.parent.mkdir(parents=True, exist_ok=True)
        by_hash.write_bytes(data)
    text = release_text(suite, indices, **release)  # type: ignore[arg-type]
    (dists / "InRelease").write_bytes(sign(text))
    return MirrorTree(root, list(pkgs), debs)


class _QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def served(root: Path) -> Iterator[str]:
    """A mirror tree served over HTTP on a loopback port while the block runs; its URL.
    After the block the port is closed: the mirror is unreachable at that URL."""
    handler = functools.partial(_QuietFiles, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def kernel_pkgs() -> list[Pkg]:
    """A kernel metapackage, the versioned package it pins, and a package it depends on."""
    source = {"Source": "linux-signed (6.1.1+1)"}
    return [
        Pkg("kmod", "30+20221128-1"),
        Pkg("linux-image-6.1.0-9-test", "6.1.1-1",
            files={"./boot/vmlinuz-6.1.0-9-test": b"kernel" * 100,
                   "./usr/lib/modules/6.1.0-9-test/modules.dep": b"kernel/a.ko:\n"},
            fields={**source, "Depends": "kmod, linux-base (>= 4.3~) | linux-initramfs-tool"}),
        Pkg("linux-image-test", "6.1.1-1",
            fields={**source, "Depends": "linux-image-6.1.0-9-test (= 6.1.1-1)",
                    "Provides": "linux-image-generic"}),
        Pkg("busybox-static", "1:1.35.0-4",
            files={"./bin/busybox": b"\x7fELF" + bytes(4000)},
            fields={"Source": "busybox (1:1.35.0-4)", "Provides": "busybox"}),
    ]  # fmt: skip


class GpgKey:
    """A throwaway OpenPGP key in a GNUPGHOME of its own: signs clearsigned messages and
    exports itself as a binary keyring, as debian-archive-keyring ships keys."""

    def __init__(self, home: Path, name: str = "Test Archive Key") -> None:
        self.home = home
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._gpg("--quick-generate-key", "--passphrase", "", name, "ed25519", "sign", "never")
        self.keyring = home / "keyring.gpg"
        self.keyring.write_bytes(self._gpg("--export"))

    def _gpg(self, *args: str, input: bytes | None = None) -> bytes:
        env = {**os.environ, "GNUPGHOME": str(self.home)}
        return subprocess.run(
            ["gpg", "--batch", "--quiet", "--pinentry-mode", "loopback", *args],
            input=input, env=env, capture_output=True, check=True, timeout=60,
        ).stdout  # fmt: skip

    def sign(self, text: bytes) -> bytes:
        return self._gpg("--digest-algo", "SHA256", "--clearsign", input=text)

    def armored(self) -> bytes:
        return self._gpg("--armor", "--export")


def later(days: float) -> datetime:
    return NOW + timedelta(days=days)


def need_gpg() -> None:
    """Skip unless gpg (to sign) and gpgv (to verify) are here; under CI, fail instead."""
    from support.programs import need

    need("gpg", "gpgv")


def configured_mirror(sources: Path = Path("/etc/apt/sources.list.d/debian.sources")) -> str:
    """The machine's apt mirror for Debian (the first URIs of its deb822 sources that
    carries Debian's main archive), else Debian's official archive."""
    from oci2vm.debian.transport import DEFAULT_MIRROR

    try:
        text = sources.read_text()
    except OSError:
        return DEFAULT_MIRROR
    for line in text.splitlines():
        if line.startswith("URIs:"):
            uris = line.split(":", 1)[1].split()
            found = [u for u in uris if u.rstrip("/").endswith("/debian")]
            if found:
                return found[0]
    return DEFAULT_MIRROR


def fixture_store() -> BlobStore:
    """The blob cache the real-mirror tests keep what they download in, under the fixture
    cache ($OCI2VM_FIXTURE_CACHE, else /var/cache/oci2vm-fixtures, else ~/.cache/...), so
    that a rerun needs the network only for the InRelease files."""
    from fixture_images import builder

    return BlobStore(builder().cache.default_cache() / "debian-archive")
