"""Errors that reach the user, each with its documented exit code.

The library raises :class:`LandscapeError` subclasses with a one-line message that says what is
wrong, where, and how to fix it. The CLI prints the message (no traceback unless ``--debug``) and
exits with :attr:`LandscapeError.exit_code`:

====  =====================================================================
code  meaning
====  =====================================================================
0     success
1     ``check``: at least one threshold failed (not an error class)
2     :class:`InputError`: missing/corrupt file, wrong keys or shapes, bad config
3     :class:`NumericalError`: non-finite loss, gradient or HVP; unrecoverable breakdown
70    a bug in landscape (an unexpected exception; ``--debug`` shows its traceback)
74    :class:`OutputError`: an output file could not be written (disk full, file too large,
      I/O error); the previous file, if any, is left as it was
130   interrupted (SIGINT); no partial output file is left
141   stdout closed early (``landscape ... | head``): the run stops quietly, nothing on stderr
143   terminated (SIGTERM, what ``timeout`` and CI time limits send); no partial file is left
====  =====================================================================

A message refers to an option by its settings key in backticks, with a value where one helps:
``(try `dtype=float64`)``, `` `batch_size` ``, `` `density=False` ``; the key is qualified by its
section (`` `spectrum.max_iter` ``) only where the bare key would be ambiguous. Read from Python
this is the keyword argument to pass; the command line shows each reference that names an
option as its flag (``--dtype float64``, ``--batch-size``, ``--no-density``). Library messages
never spell command-line flags themselves.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_INPUT = 2
EXIT_NUMERICAL = 3
EXIT_INTERNAL = 70
EXIT_OUTPUT = 74
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143
EXIT_CLOSED_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a tool writing to a closed pipe


class LandscapeError(Exception):
    """Base class of every error meant for the user; ``str(err)`` is the one-line message."""

    exit_code: int = EXIT_INPUT

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        message = _one_line(message)
        hint = None if hint is None else _one_line(hint)
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message} ({hint})")


def printable(text: str) -> str:
    """``text`` with every character a terminal could act on shown as a Python escape: control
    characters (``\\x1b``, ``\\n``, ``\\r``, C1 controls), other invisible ones (``\\u200b``) and
    the undecodable bytes of a non-UTF-8 file name (``\\xff``). Text from a file (a state-dict
    key, a report's attribute, a path) goes through it before it is printed, so that it can
    neither break an error's single line nor send escape sequences to the terminal."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable():
            out.append(ch)
        elif "\udc80" <= ch <= "\udcff":  # a byte that os.fsdecode could not decode
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        else:
            out.append(ch.encode("unicode_escape", "backslashreplace").decode("ascii"))
    return "".join(out)


def _one_line(text: str) -> str:
    """Messages are one line of printable text (see :func:`printable`)."""
    return printable(str(text))


class Terminated(BaseException):
    """Raised in the main thread when the process receives SIGTERM (see
    :mod:`landscape_cli.signals`): like ``KeyboardInterrupt`` for SIGINT, it unwinds every
    ``finally`` and ``except BaseException`` block, so temporary files are removed."""


class InputError(LandscapeError):
    """Bad input or usage: a file, spec, key, shape or option the user can fix (exit code 2)."""

    exit_code = EXIT_INPUT


class NumericalError(LandscapeError):
    """A non-finite loss, gradient or HVP, or an unrecoverable solver failure (exit code 3)."""

    exit_code = EXIT_NUMERICAL


class OutputError(LandscapeError):
    """An output file could not be written once the results were computed: the disk is full, the
    file too large, the device failed (exit code 74, ``EX_IOERR`` of sysexits.h). Locations that
    cannot be written at all are found before the analysis and are :class:`InputError`."""

    exit_code = EXIT_OUTPUT


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says that memory ran out: ``MemoryError`` (host), ``torch.OutOfMemoryError``
    (CUDA, MPS, XPU), or a ``RuntimeError`` saying so (torch's CPU allocator, older torch, other
    backends). torch is looked up, not imported: ``--help`` must stay light."""
    if isinstance(exc, MemoryError):
        return True
    torch = sys.modules.get("torch")
    oom = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    if oom is not None and isinstance(exc, oom):
        return True
    if not isinstance(exc, RuntimeError):
        return False
    lines = str(exc).strip().lower().splitlines()
    first = lines[0] if lines else ""
    return "out of memory" in first or "can't allocate memory" in first


def is_host_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says that the host's (CPU) memory ran out, not a device's."""
    return isinstance(exc, MemoryError) or (
        is_out_of_memory(exc) and "DefaultCPUAllocator" in str(exc)
    )


@contextlib.contextmanager
def numerical_errors(what: str) -> Iterator[None]:
    """Turn a ``FloatingPointError`` raised by an estimator (non-finite numbers) into a
    :class:`NumericalError` saying which computation failed."""
    try:
        yield
    except FloatingPointError as exc:
        raise NumericalError(f"{what} produced non-finite numbers: {exc}") from None
