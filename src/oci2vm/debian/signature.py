"""Checking an InRelease file's OpenPGP signature against Debian's archive keys, with gpgv.

gpgv is the verifier apt itself runs (apt's gpgv method), so a Release is accepted here
exactly when apt would accept it with the same keyring; it ships in every Debian system
(apt depends on it), needs no key database, and is run through oci2vm.util.tools like every
program. pysequoia would add a compiled dependency for the same verdict. The rules are apt's
(apt-pkg/contrib/gpgv.cc and methods/gpgv.cc): the file is one clearsigned message and
nothing else; at least one signature is good (GOODSIG and VALIDSIG) by a key of the
keyring, made with a digest apt still accepts; no signature is bad (BADSIG); signatures by
keys not in the keyring are ignored. What is used afterwards is the text gpgv wrote out as
signed, never a parse of the file itself.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from oci2vm.errors import Oci2vmError
from oci2vm.util.tools import run

# The keyring apt's sources name for Debian (Signed-By), from debian-archive-keyring.
DEFAULT_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
KEYRING_PACKAGE = "debian-archive-keyring"
# OpenPGP hash algorithm ids (RFC 4880 §9.4) that apt refuses: MD5, SHA1, RIPEMD160.
WEAK_DIGESTS = frozenset({"1", "2", "3"})
BEGIN_SIGNED = b"-----BEGIN PGP SIGNED MESSAGE-----\n"
BEGIN_SIGNATURE = b"\n-----BEGIN PGP SIGNATURE-----\n"
END_SIGNATURE = b"\n-----END PGP SIGNATURE-----"
GPGV_TIMEOUT = 60.0


def check_keyring(path: Path) -> Path:
    """A keyring file gpgv can read, or a one-line error naming the fix."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except FileNotFoundError:
        if path == DEFAULT_KEYRING:
            raise Oci2vmError(
                f"{path} not found: install Debian's archive keys with "
                f"'apt-get install {KEYRING_PACKAGE}', or give --keyring FILE"
            ) from None
        raise Oci2vmError(f"keyring {path} not found: check --keyring") from None
    except OSError as e:
        raise Oci2vmError(f"keyring {path}: cannot read it ({e.strerror})") from None
    if head.lstrip().startswith(b"-----BEGIN PGP"):
        raise Oci2vmError(
            f"keyring {path} is ASCII-armoured: convert it with "
            f"'gpg --dearmor < {path} > {path.with_suffix('.gpg')}' and give that --keyring"
        )
    if not head:
        raise Oci2vmError(f"keyring {path} is empty: check --keyring")
    return path


def _check_framing(data: bytes, what: str) -> None:
    """One clearsigned message, nothing before or after it (apt's SplitClearSignedFile:
    text outside the signed part must never be mistaken for signed text)."""
    if (
        not data.startswith(BEGIN_SIGNED)
        or data.count(b"-----BEGIN PGP SIGNED MESSAGE-----") != 1
        or data.count(BEGIN_SIGNATURE) != 1
        or data.count(END_SIGNATURE) != 1
        or data.rstrip(b"\r\n").rsplit(b"\n", 1)[-1] != END_SIGNATURE.strip(b"\n")
    ):
        raise Oci2vmError(f"{what}: not one clearsigned OpenPGP message: check --mirror")


def _verdict(status: str, what: str, keyrings: Sequence[Path]) -> None:
    """Judge gpgv's --status-fd lines, one signature (NEWSIG) at a time."""
    signatures: list[dict[str, list[str]]] = []
    for line in status.splitlines():
        words = line.split()
        if len(words) < 2 or words[0] != "[GNUPG:]":
            continue
        if words[1] == "NEWSIG" or not signatures:
            signatures.append({})
        signatures[-1][words[1]] = words[2:]
    if any("BADSIG" in s for s in signatures):
        raise Oci2vmError(f"{what}: BAD signature (a tampered or broken mirror): check --mirror")
    good = [s for s in signatures if "GOODSIG" in s and "VALIDSIG" in s]
    strong = [s for s in good if len(s["VALIDSIG"]) > 7 and s["VALIDSIG"][7] not in WEAK_DIGESTS]
    if strong:
        return
    if good:
        raise Oci2vmError(f"{what}: signed only with a weak digest (SHA1 or older): check --mirror")
    names = ", ".join(str(k) for k in keyrings)
    if any("NO_PUBKEY" in s or "ERRSIG" in s for s in signatures):
        raise Oci2vmError(
            f"{what}: signed by no key of {names}: update {KEYRING_PACKAGE}, or give the "
            "mirror's key with --keyring FILE"
        )
    if any(k in s for s in signatures for k in ("EXPKEYSIG", "REVKEYSIG", "EXPSIG")):
        raise Oci2vmError(f"{what}: signed by an expired or revoked key: update {KEYRING_PACKAGE}")
    raise Oci2vmError(f"{what}: no valid signature found: check --mirror and --keyring")


def verify_clearsigned(data: bytes, keyrings: Sequence[Path], what: str) -> bytes:
    """The signed text of the clearsigned message `data`, once its signature holds against
    `keyrings` (see the module's rules); otherwise a one-line error naming the fix."""
    _check_framing(data, what)
    keyrings = [check_keyring(k) for k in keyrings] or [check_keyring(DEFAULT_KEYRING)]
    with tempfile.TemporaryDirectory(prefix="oci2vm-gpgv-") as tmp:
        signed, out = Path(tmp) / "InRelease", Path(tmp) / "Release"
        signed.write_bytes(data)
        argv: list[str | Path] = ["gpgv", "--homedir", tmp, "--status-fd", "1"]
        for keyring in keyrings:
            argv += ["--keyring", keyring.absolute()]
        proc = run([*argv, "--output", out, signed], check=False, timeout=GPGV_TIMEOUT)
        status = proc.stdout.decode("utf-8", "replace")
        if "[GNUPG:]" not in status and proc.returncode != 0:
            err = (proc.stderr or b"").decode("utf-8", "replace").strip().splitlines()
            raise Oci2vmError(f"gpgv failed on {what}: {err[-1] if err else proc.returncode}")
        _verdict(status, what, keyrings)
        if proc.returncode not in (0, 2) or not out.is_file():  # 2: some key was missing
            raise Oci2vmError(f"gpgv failed on {what}: exit status {proc.returncode}")
        return out.read_bytes()
