"""SHA-512 crypt ($6$), the hash /etc/shadow uses on every current distribution.

Python's crypt module is deprecated and gone in 3.13, and the algorithm is short and fully
specified (Ulrich Drepper, "Unix crypt using SHA-256 and SHA-512", 2007), so it lives here.
"""

from __future__ import annotations

import hashlib
import hmac

ROUNDS = 5000  # the scheme's default: the hash then carries no rounds= field
ROUNDS_MIN = 1000  # the specification clamps a requested count into this range
ROUNDS_MAX = 999_999_999
_B64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# The byte order of the final encoding, three bytes a group (from the specification).
_ORDER = [
    (0, 21, 42), (22, 43, 1), (44, 2, 23), (3, 24, 45), (25, 46, 4), (47, 5, 26),
    (6, 27, 48), (28, 49, 7), (50, 8, 29), (9, 30, 51), (31, 52, 10), (53, 11, 32),
    (12, 33, 54), (34, 55, 13), (56, 14, 35), (15, 36, 57), (37, 58, 16), (59, 17, 38),
    (18, 39, 60), (40, 61, 19), (62, 20, 41),
]  # fmt: skip


def _b64(value: int, count: int) -> str:
    out = []
    for _ in range(count):
        out.append(_B64[value & 0x3F])
        value >>= 6
    return "".join(out)


def _repeat(digest: bytes, length: int) -> bytes:
    return (digest * (length // 64 + 1))[:length]


def sha512_crypt(password: str, salt: str, rounds: int = ROUNDS) -> str:
    rounds = min(max(rounds, ROUNDS_MIN), ROUNDS_MAX)
    key = password.encode()
    salt = salt[:16]
    s = salt.encode()
    b = hashlib.sha512(key + s + key).digest()
    a = hashlib.sha512(key + s + _repeat(b, len(key)))
    n = len(key)
    while n:
        a.update(b if n & 1 else key)
        n >>= 1
    a_digest = a.digest()
    p = _repeat(hashlib.sha512(key * len(key)).digest(), len(key))
    ds = _repeat(hashlib.sha512(s * (16 + a_digest[0])).digest(), len(s))
    c = a_digest
    for i in range(rounds):
        h = hashlib.sha512(p if i & 1 else c)
        if i % 3:
            h.update(ds)
        if i % 7:
            h.update(p)
        h.update(c if i & 1 else p)
        c = h.digest()
    encoded = "".join(_b64((c[x] << 16) | (c[y] << 8) | c[z], 4) for x, y, z in _ORDER)
    encoded += _b64(c[63], 2)
    prefix = "$6$" if rounds == ROUNDS else f"$6$rounds={rounds}$"
    return f"{prefix}{salt}${encoded}"


def derived_salt(secret: str, context: str) -> str:
    """A 16-character salt derived from the password and the build's identity, so that
    the same inputs give the same image (a random salt would break reproducibility)."""
    mac = hmac.new(context.encode(), secret.encode(), hashlib.sha512).digest()
    return "".join(_B64[b & 0x3F] for b in mac[:16])
