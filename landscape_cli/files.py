"""Writing output files: created exclusively, renamed into place, never half-written.

Every file landscape writes (reports, figures, HTML, JUnit XML) goes through
:func:`atomic_file`. The content is written to a temporary file that :func:`tempfile.mkstemp`
creates in the target's folder (``O_CREAT | O_EXCL``, an unpredictable name: nothing planted in
a shared folder can be opened in its place), through the open descriptor only, then flushed,
synced and moved over the target with :func:`os.replace`, which replaces a symlink at the target
rather than following it. SIGINT and SIGTERM are held back while the file is written; when one
came, or on any exception, the temporary file is removed and the target is left as it was.

:func:`directory_lock` serialises read-modify-write updates of one file between processes.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from . import signals
from .errors import InputError, OutputError


def _default_mode() -> int:
    """The permissions a new file gets from ``open``: ``0o666`` less the umask (read from
    ``/proc`` where it can be, so that the umask is never changed, not even for an instant)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def check_directory(path: Path) -> None:
    """Raise :class:`InputError` unless ``path`` can be created: its folder exists, and
    ``path`` is not a folder."""
    if not path.parent.is_dir():
        raise InputError(f"{path}: the directory {path.parent} does not exist")
    if path.is_dir():
        raise InputError(f"{path} is a directory; give a file name")


def check_writable(path: str | os.PathLike[str]) -> None:
    """Raise :class:`InputError` unless a file can be written at ``path``: :func:`check_directory`,
    and the folder accepts a new file (a read-only file system, missing permissions), which is
    probed by creating and removing an empty temporary file. Called before an analysis, so that a
    bad output location costs nothing."""
    path = Path(path)
    check_directory(path)
    try:
        fd, name = tempfile.mkstemp(prefix=".landscape-probe-", dir=path.parent)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise InputError(f"{path}: cannot create files in {path.parent} ({reason})") from None
    os.close(fd)
    os.unlink(name)


def refuse_special_file(path: str | os.PathLike[str], where: str) -> None:
    """Raise :class:`InputError` when ``path`` exists and is neither a regular file nor a folder
    (a FIFO, socket or device, whose reading could block forever), before anything opens it.
    A missing path or a folder is left to the caller's own message."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise InputError(
            f"{where}: not a regular file (a FIFO, socket or device); give a file",
            hint="copy the content into a file first",
        )


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], *, text: bool = False) -> Iterator[IO[Any]]:
    """A new file object that becomes ``path`` when the block ends without an exception.

    Binary (``w+b``: readable too, as h5py needs) unless ``text``, then UTF-8 with ``\\n`` line
    ends. The file gets the permissions of a file created with ``open``.

    Raises:
        InputError: the folder of ``path`` does not exist or ``path`` is a folder.
        OutputError: an ``OSError`` while the file was created, written or renamed (a full disk,
            a file too large, an I/O error).
        KeyboardInterrupt, Terminated: SIGINT or SIGTERM came while the block ran (after the
            temporary file is removed).
    """
    path = Path(path)
    check_directory(path)
    with signals.deferred() as raise_if_signalled:
        try:
            fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        except OSError as exc:
            raise _output_error(path, exc) from None
        try:
            os.fchmod(fd, _default_mode())
            mode = "w" if text else "w+b"
            encoding = "utf-8" if text else None
            with open(fd, mode, encoding=encoding, newline="\n" if text else None) as file:
                yield file
                file.flush()
                os.fsync(file.fileno())
            raise_if_signalled()
            os.replace(name, path)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(name)
            if isinstance(exc, OSError):
                raise _output_error(path, exc) from None
            raise


def _output_error(path: Path, exc: OSError) -> OutputError:
    reason = exc.strerror or str(exc) or type(exc).__name__
    return OutputError(f"{path}: could not be written ({reason})")


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` through :func:`atomic_file`."""
    with atomic_file(path, text=True) as file:
        file.write(text)
    return Path(path)


@contextlib.contextmanager
def directory_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive :func:`fcntl.flock` on the folder of ``path`` for the block, so that
    two processes updating files there (read the old report, add a section, rename) take turns
    instead of one losing the other's update. Locking the folder leaves no lock file behind. A
    no-op where ``flock`` is unavailable (Windows) or not supported by the file system."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    try:
        fd = os.open(Path(path).parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # a file system without flock
            pass
        yield
    finally:
        os.close(fd)
