"""Keep code we do not own (model factories, losses, data callables, TorchScript archives) off
stdout, which carries results only (one JSON object with ``--json``)."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Iterator
from typing import TextIO


def stdout_to_devnull() -> None:
    """Point file descriptor 1 at ``/dev/null`` once the reader of stdout has gone (a closed
    pipe), so that flushing what is still buffered, at exit too, cannot fail again."""
    with contextlib.suppress(OSError, ValueError):  # an in-memory stdout has no descriptor
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        finally:
            os.close(devnull)


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[TextIO]:
    """Within the block, whatever is written to stdout goes to stderr: Python's ``sys.stdout``
    (``print``, TorchScript's ``print``) and, when stdout is a real file, file descriptor 1 (C and
    C++ code). Yields a stream that still writes to the original stdout, for results.
    """
    original = sys.stdout
    original.flush()
    try:
        fd = original.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation: an in-memory stream
        fd = None
    if fd != 1:
        with contextlib.redirect_stdout(sys.stderr):
            yield original
        return
    saved = os.dup(1)
    results = io.TextIOWrapper(
        os.fdopen(os.dup(saved), "wb", buffering=0),
        encoding=original.encoding or "utf-8",
        errors=original.errors or "strict",
        line_buffering=True,
    )
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield results
    finally:
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()
        os.dup2(saved, 1)
        os.close(saved)
        with contextlib.suppress(OSError, ValueError):  # e.g. a closed pipe: reported elsewhere
            results.close()
