"""SIGINT and SIGTERM as exceptions that unwind cleanly, and never half a file on disk.

:func:`install` makes SIGINT raise ``KeyboardInterrupt`` and SIGTERM raise
:class:`~landscape_cli.errors.Terminated` in the main thread, and remembers that the signal came.
An exception raised from a signal handler can be swallowed when it lands in a destructor or a
callback from C (Python prints "Exception ignored" and goes on), so a command also calls
:func:`raise_if_received` before it reports success. While a file is written,
:func:`deferred` holds both signals back: the handler only records them, and the block's end
raises, after which the writer removes its temporary file (see :mod:`landscape_cli.files`).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

from .errors import Terminated

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_received: list[int] = []
_deferring = 0
_installed = False


def _exception(signum: int) -> BaseException:
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated()


def _handle(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)
    if not _deferring:
        raise _exception(signum)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def install() -> None:
    """Route SIGINT and SIGTERM through this module (main thread only; elsewhere a no-op)."""
    global _installed
    if _in_main_thread():
        _received.clear()
        _installed = True
        for signum in SIGNALS:
            signal.signal(signum, _handle)


def uninstall() -> None:
    """Give SIGINT and SIGTERM back their default handlers and forget received signals."""
    global _installed
    if _in_main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _received.clear()
        _installed = False


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
    previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
    _deferring += 1
    for signum in SIGNALS:
        signal.signal(signum, _handle)
    try:
        yield raise_if_came
    finally:
        _deferring -= 1
        if not _deferring:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
    raise_if_came()
