"""The console script ``landscape`` and ``python -m landscape_cli``: route SIGINT and SIGTERM
through :mod:`landscape_cli.signals` before anything heavy is imported, then run the app."""

from __future__ import annotations

import sys

from . import signals
from .errors import EXIT_INTERRUPTED, EXIT_TERMINATED, Terminated


def main() -> None:
    """Run ``landscape``: a signal at any moment, even while the app is being imported, ends the
    run with one line on stderr and exit 130 (SIGINT) or 143 (SIGTERM), never a traceback."""
    signals.install()
    try:
        from .cli.app import main as run

        run()
    except (KeyboardInterrupt, Terminated) as exc:  # outside a command: importing, exiting
        terminated = isinstance(exc, Terminated)
        sys.stderr.write(f"landscape: {'terminated' if terminated else 'interrupted'}\n")
        raise SystemExit(EXIT_TERMINATED if terminated else EXIT_INTERRUPTED) from None
