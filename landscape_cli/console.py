"""The console script ``landscape`` and ``python -m landscape_cli``: route SIGINT and SIGTERM
through :mod:`landscape_cli.signals` before anything heavy is imported, then run the app."""

from __future__ import annotations

import sys

from . import signals
from .errors import EXIT_CLOSED_PIPE, Terminated


def main() -> None:
    """Run ``landscape``: a signal at any moment, even while the app is being imported, ends the
    run with one line on stderr and exit 130 (SIGINT) or 143 (SIGTERM), never a traceback; a
    closed stdout (``landscape ... | head``) ends it quietly with exit 141 (128 + SIGPIPE)."""
    signals.install()
    try:
        from .cli.app import main as run

        try:
            run()
        finally:
            try:
                sys.stdout.flush()  # here, where a closed pipe is handled, rather than at exit
            finally:
                signals.exit_on_signal()  # the teardown that follows is not interrupted midway
    except (KeyboardInterrupt, Terminated) as exc:  # outside a command: importing, exiting
        raise SystemExit(signals.announce(isinstance(exc, Terminated))) from None
    except BrokenPipeError:  # outside a command: help text, or the final flush
        from .streams import stdout_to_devnull

        stdout_to_devnull()
        raise SystemExit(EXIT_CLOSED_PIPE) from None
