"""SIGINT and SIGTERM as exceptions that unwind cleanly, and never half a file on disk.

:func:`install` makes SIGINT raise ``KeyboardInterrupt`` and SIGTERM raise
:class:`~landscape_cli.errors.Terminated` in the main thread, and remembers that the signal came.
An exception raised from a signal handler can be swallowed when it lands in a destructor or a
callback from C (Python prints "Exception ignored" and goes on), so a command also calls
:func:`raise_if_received` before it reports success. While a file is written,
:func:`deferred` holds both signals back: the handler only records them, and the block's end
raises, after which the writer removes its temporary file (see :mod:`landscape_cli.files`).
A signal the process inherited as ignored (``nohup``, a shell's background job) stays ignored.
Once a command is over, :func:`exit_on_signal` ends the interpreter's teardown at once on a
signal instead of raising into its exit callbacks.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType

from .errors import EXIT_INTERRUPTED, EXIT_TERMINATED, Terminated

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_received: list[int] = []
_deferring = 0
_installed = False
_before_install: dict[int, object] = {}


def _exception(signum: int) -> BaseException:
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated()


def _handle(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)
    if not _deferring:
        raise _exception(signum)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _routed(handler: Callable[[int, FrameType | None], object]) -> dict[int, object]:
    """Set ``handler`` for SIGINT and SIGTERM except where the signal is ignored; return the
    handlers replaced."""
    previous = {}
    for signum in SIGNALS:
        current = signal.getsignal(signum)
        if current is not signal.SIG_IGN:
            previous[signum] = current
            signal.signal(signum, handler)
    return previous


def install() -> None:
    """Route SIGINT and SIGTERM through this module (main thread only; elsewhere a no-op)."""
    global _installed
    if _in_main_thread():
        _received.clear()
        _installed = True
        replaced = _routed(_handle)
        if not _before_install:
            _before_install.update(replaced)


def uninstall() -> None:
    """Give SIGINT and SIGTERM back the handlers :func:`install` replaced and forget received
    signals."""
    global _installed
    if _in_main_thread():
        for signum, handler in _before_install.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        _before_install.clear()
        _received.clear()
        _installed = False


def announce(terminated: bool) -> int:
    """Write the one line that ends a run stopped by SIGTERM (``terminated``) or SIGINT, and
    return its exit code, 143 or 130."""
    sys.stderr.write(f"landscape: {'terminated' if terminated else 'interrupted'}\n")
    sys.stderr.flush()
    return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED


def _exit_now(signum: int, frame: FrameType | None) -> None:
    os._exit(announce(signum == signal.SIGTERM))


def exit_on_signal() -> None:
    """From now on SIGINT or SIGTERM ends the process at once (one line, exit 130 or 143).

    For the interpreter's teardown after a command has finished and flushed its output: an
    exception raised there lands in an exit callback or a finaliser (e.g. ``torch.library``'s),
    where Python prints "Exception ignored" and a traceback and goes on exiting."""
    if _in_main_thread():
        _routed(_exit_now)


def raise_if_received() -> None:
    """Raise for the first signal received since :func:`install`, even if its exception was
    swallowed on the way (nothing when :func:`install` was not called)."""
    if _installed and _received:
        raise _exception(_received[0])


@contextlib.contextmanager
def deferred() -> Iterator[Callable[[], None]]:
    """Within the block SIGINT and SIGTERM are recorded, not raised; at its end the first one
    received is raised. Yields a function that raises it earlier, at a point the block chooses
    (a writer calls it just before renaming its file into place). Installs the recording handler
    for its own duration when :func:`install` was not called."""
    global _deferring
    mark = len(_received)

    def raise_if_came() -> None:
        if len(_received) > mark:
            raise _exception(_received[mark])

    if not _in_main_thread():
        yield raise_if_came
        return
    _deferring += 1
    previous = _routed(_handle)
    try:
        yield raise_if_came
    finally:
        _deferring -= 1
        if not _deferring:
            for signum, handler in previous.items():
                signal.signal(signum, handler)  # type: ignore[arg-type]
    raise_if_came()
