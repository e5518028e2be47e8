"""User-facing errors: the CLI prints their message on one line and exits non-zero."""


class UserError(Exception):
    """A mistake in what the user asked for or gave us (bad file, bad option), not a bug."""


def warn(message: str) -> None:
    """One line on stderr: something the user should know that does not stop the work."""
    import sys
    print(f"warning: {message}", file=sys.stderr)


def require_torch(purpose: str) -> None:
    """One line instead of a traceback where a step needs the export/training extras."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise UserError(f"{purpose} needs PyTorch: pip install 'cornernet-deploy[torch]'") from None
