"""User-facing errors: the CLI prints their message on one line and exits non-zero."""


class UserError(Exception):
    """A mistake in what the user asked for or gave us (bad file, bad option), not a bug."""


def warn(message: str) -> None:
    """One line on stderr: something the user should know that does not stop the work."""
    import sys
    print(f"warning: {message}", file=sys.stderr)
