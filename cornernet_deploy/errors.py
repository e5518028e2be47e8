"""User-facing errors: the CLI prints their message on one line and exits non-zero."""


class UserError(Exception):
    """A mistake in what the user asked for or gave us (bad file, bad option), not a bug."""
