"""SHA-512 crypt against libc's crypt(3), the reference, and the salts derived from a build."""

from __future__ import annotations

import pytest

from oci2vm.prepare.passwords import derived_salt, sha512_crypt
from support.prepared import IDENTITY, libc_crypt

CRYPT_ALPHABET = set("./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


# -- SHA-512 crypt ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "salt", "rounds"),
    [
        ("secret", "abcdefgh", None),
        ("", "saltsalt", None),
        ("correct horse battery staple", "0123456789abcdef", None),
        ("pässwörd €", "./Zz09", None),
        ("x" * 200, "longpassword", None),  # longer than a SHA-512 digest
        ("secret", "a", 1000),
        ("Hello world!", "saltstring", 10000),
        ("secret", "0123456789abcdefXYZ", 5001),  # salts stop at 16 characters
    ],
)
def test_sha512_crypt_equals_libc_crypt(password: str, salt: str, rounds: int | None) -> None:
    if rounds is None:
        ours = sha512_crypt(password, salt)
        setting = f"$6${salt}$"
    else:
        ours = sha512_crypt(password, salt, rounds)
        setting = f"$6$rounds={rounds}${salt}$"
    assert ours == libc_crypt(password, setting)
    assert ours.startswith(f"$6$rounds={rounds}$" if rounds else f"$6${salt[:16]}$")


def test_sha512_crypt_clamps_rounds_to_the_specified_minimum() -> None:
    """Drepper's specification: fewer than 1000 rounds means 1000, and the hash says so."""
    expected = libc_crypt("secret", "$6$rounds=1000$abcdefgh$")
    assert sha512_crypt("secret", "abcdefgh", 10) == expected
    assert sha512_crypt("secret", "abcdefgh", 1000) == expected


def test_derived_salt_is_deterministic_crypt_alphabet_of_16() -> None:
    salt = derived_salt("secret", IDENTITY)
    assert salt == derived_salt("secret", IDENTITY)
    assert len(salt) == 16
    assert set(salt) <= CRYPT_ALPHABET
    assert derived_salt("secret", "sha256:" + "cd" * 32) != salt
    assert derived_salt("secret2", IDENTITY) != salt
    salts = {derived_salt(f"password{n}", IDENTITY) for n in range(200)}
    assert len(salts) == 200
    assert set("".join(salts)) == CRYPT_ALPHABET  # all 64 characters are reachable
