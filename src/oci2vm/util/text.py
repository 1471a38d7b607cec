"""Text from outside (a server's error message, a header, a name it lists) made fit for a
one-line message: what a terminal would act on is escaped, and the length is bounded."""

from __future__ import annotations

MAX_SHOWN = 200  # characters of one such text in a message


def shown(text: object, limit: int = MAX_SHOWN) -> str:
    """`text` on one line: runs of whitespace become one space; characters that do not
    print (C0 and C1 controls, DEL, bidi overrides: an ESC would start a terminal's
    escape sequence) are escaped as repr() escapes them; over `limit` characters, it is
    cut and ends with "…"."""
    folded = " ".join(str(text).split())
    escaped = "".join(c if c.isprintable() else repr(c)[1:-1] for c in folded[: limit + 1])
    return escaped if len(escaped) <= limit else escaped[: limit - 1] + "…"
