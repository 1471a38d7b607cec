"""The one error class users can hit. Its message is one line and names the fix;
anything else that escapes is a bug and keeps its traceback."""


class Oci2vmError(Exception):
    """A problem with the user's input or environment, reported as one line."""
