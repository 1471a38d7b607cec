"""The one error class users can hit. Its message is one line and names the fix;
anything else that escapes is a bug and keeps its traceback."""


class Oci2vmError(Exception):
    """A problem with the user's input or environment, reported as one line."""


class EntryError(Oci2vmError):
    """A problem with one entry, raised where its path is not known (a filesystem writer
    given an inode); the caller that knows the path names it."""


class Terminated(BaseException):
    """A stop signal (SIGTERM, SIGHUP) arrived: unwinds the way Ctrl-C does, so that every
    temporary output is removed, and the process exits with 128 + the signal's number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
