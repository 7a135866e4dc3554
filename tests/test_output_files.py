"""Every file written is created exclusively, renamed into place, and complete or absent.

* a symlink planted at a final name, or at any temporary name an old writer would have used, is
  never followed: the victim it points to is unchanged;
* an exception, SIGINT or SIGTERM while a file is written leaves the old file as it was and no
  temporary file; SIGINT ends with exit 130, SIGTERM with 143, every time (a sweep of delays);
* two writers of one report take turns: neither loses the other's section.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import pytest

from landscape_cli import signals
from landscape_cli.errors import InputError, Terminated
from landscape_cli.files import atomic_file, directory_lock, write_text
from landscape_cli.io import report_file
from landscape_cli.io.report_file import read_report, write_report

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--slq-runs", "1", "--slq-steps", "8", "--grid", "40", "--trace-matvecs", "8"]
FAST_CONFIG = "spectrum: {slq_runs: 1, slq_steps: 8, grid: 40, trace_matvecs: 8}\n"
INFO = {"num_parameters": 3, "seed": 0, "device": "cpu", "dtype": "float64"}


def temporary_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def victim(tmp_path: Path) -> Path:
    path = tmp_path / "elsewhere" / "victim.txt"
    path.parent.mkdir()
    path.write_text("precious")
    return path


def env() -> dict[str, str]:
    return {
        **os.environ,
        "MPLBACKEND": "Agg",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "landscape_cli", *args], cwd=cwd, env=env(),
        capture_output=True, text=True, timeout=600, check=True,
    )  # fmt: skip


def run_cli(*args: str, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "landscape_cli", *args], cwd=cwd, env=env(), capture_output=True,
        text=True, timeout=600, **kwargs,
    )  # fmt: skip


def one_error_line(proc: subprocess.CompletedProcess, code: int, text: str) -> None:
    """One error line on stderr, after the plan line when the analysis ran (a write error)."""
    assert proc.returncode == code, proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if not line.startswith(PLAN)]
    assert len(lines) == 1 and text in lines[0], proc.stderr


PLAN = "landscape: plan: "


# ------------------------------------------------------------------ atomic_file
def test_atomic_file_replaces_a_symlink_at_the_target_instead_of_following_it(tmp_path):
    target, precious = tmp_path / "out.txt", victim(tmp_path)
    target.symlink_to(precious)
    write_text(target, "new")
    assert not target.is_symlink() and target.read_text() == "new"
    assert precious.read_text() == "precious"


def test_atomic_file_gives_the_permissions_of_a_new_file(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    write_text(tmp_path / "out.txt", "x")
    assert stat.S_IMODE((tmp_path / "out.txt").stat().st_mode) == 0o666 & ~umask


def test_an_exception_while_writing_keeps_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_file(target, text=True) as file:
        file.write("half")
        raise RuntimeError("disk on fire")
    assert target.read_text() == "old" and temporary_files(tmp_path) == []


@pytest.fixture
def handled_signals():
    """SIGINT and SIGTERM at Python's defaults for the test (a test run started in the
    background inherits them ignored), and the handlers found before it restored after it."""
    found = {signum: signal.getsignal(signum) for signum in signals.SIGNALS}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    for signum, handler in found.items():
        signal.signal(signum, handler)


@pytest.mark.parametrize(
    ("signum", "exception"), [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, Terminated)]
)
def test_a_signal_while_writing_is_held_until_the_file_is_removed(
    tmp_path, signum, exception, handled_signals
):
    target = tmp_path / "out.txt"
    target.write_text("old")
    reached_the_end = False
    with pytest.raises(exception), atomic_file(target, text=True) as file:
        file.write("half")
        os.kill(os.getpid(), signum)
        time.sleep(0.05)  # the handler runs here; it must not raise inside the block
        file.write(" and the rest")
        reached_the_end = True
    assert reached_the_end
    assert target.read_text() == "old" and temporary_files(tmp_path) == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


@pytest.mark.parametrize("signum", signals.SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_an_ignored_signal_stays_ignored_while_writing(tmp_path, signum, handled_signals):
    signal.signal(signum, signal.SIG_IGN)  # as nohup or a background job in a script leaves it
    target = tmp_path / "out.txt"
    with atomic_file(target, text=True) as file:
        file.write("half")
        os.kill(os.getpid(), signum)
        time.sleep(0.05)
        file.write(" and the rest")
    assert target.read_text() == "half and the rest"
    assert signal.getsignal(signum) is signal.SIG_IGN


def test_a_missing_folder_is_an_input_error_and_creates_nothing(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        write_text(tmp_path / "no" / "out.txt", "x")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ planted symlinks, real runs
def plant_every_temporary_name(folder: Path, name: str, precious: Path) -> None:
    """Symlinks at the temporary names a writer could predict: ``.{name}.tmp-{pid}`` for the
    next few hundred process ids (the runs below get one of them)."""
    last = int(Path("/proc/sys/kernel/ns_last_pid").read_text())
    for pid in range(last + 1, last + 300):
        (folder / f".{name}.tmp-{pid}").symlink_to(precious)


@pytest.mark.skipif(not Path("/proc/sys/kernel/ns_last_pid").exists(), reason="Linux pids")
def test_report_figures_html_and_junit_never_follow_planted_symlinks(tmp_path):
    precious = victim(tmp_path)
    folder = tmp_path / "shared"
    folder.mkdir()
    finals = ["R-density.png", "R-ritz.png", "R-sharpness.png", "R.html", "checks.xml"]
    for name in finals:
        (folder / name).symlink_to(precious)
    for name in [*finals, "R.h5"]:
        plant_every_temporary_name(folder, name, precious)
    (tmp_path / "fast.yaml").write_text(FAST_CONFIG)
    proc = run_cli(
        "report", "--out", "R.h5", "--no-surface", "--config", str(tmp_path / "fast.yaml"),
        cwd=folder,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("check", "R.h5", "--max", "lambda_max=1e9", "--junit", "checks.xml", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    assert precious.read_text() == "precious"
    for name in [*finals, "R.h5"]:
        assert not (folder / name).is_symlink() and (folder / name).stat().st_size > 0
    read_report(folder / "R.h5")


def test_a_symlink_at_the_report_name_pointing_to_another_file_is_refused(tmp_path):
    precious = victim(tmp_path)
    (tmp_path / "R.h5").symlink_to(precious)
    proc = run_cli("spectrum", "--out", "R.h5", *FAST, cwd=tmp_path)
    one_error_line(proc, 2, "not an HDF5 file")
    assert precious.read_text() == "precious"


# ------------------------------------------------------------------ concurrent writers
def test_two_concurrent_writers_of_one_report_keep_both_sections(tmp_path, monkeypatch):
    """Each writer reads the old report, adds its section and renames; the second writer is held
    in the middle of its write long enough that, without the lock, the first would read the file
    before it and overwrite its section."""
    from landscape_cli.analyses.jacobian import JacobianResult  # noqa: F401  (registry import)

    path = tmp_path / "R.h5"
    write_report(path, {}, config=None, command_line="first", objective_info=INFO)
    slow = threading.Event()
    original = report_file.set_attrs

    def slow_set_attrs(target, attrs):
        if "command_line" in attrs and attrs["command_line"] == "writer-a":
            slow.set()
            time.sleep(0.5)
        original(target, attrs)

    monkeypatch.setattr(report_file, "set_attrs", slow_set_attrs)

    def write(section_group: str, command: str) -> None:
        with directory_lock(path):
            with report_file._atomic_update(path, True) as f:
                f.create_group(section_group)
                report_file.set_attrs(f, {"command_line": command})

    a = threading.Thread(target=write, args=("a", "writer-a"))
    a.start()
    assert slow.wait(10)
    write("b", "writer-b")
    a.join()
    with h5py.File(path) as f:
        assert {"a", "b"} <= set(f)


def test_two_surface_runs_into_one_report_at_once_keep_both_surfaces(tmp_path):
    args = ["surface", "--dims", "1", "--points", "3", "--out", "S.h5", "--quiet"]
    command = [sys.executable, "-m", "landscape_cli", *args]
    runs = [
        subprocess.Popen([*command, "--name", name], cwd=tmp_path, env=env(), text=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for name in ("A", "B")
    ]  # fmt: skip
    for run in runs:
        assert run.wait(timeout=600) == 0, run.stderr.read()
        run.stderr.close()
    assert set(read_report(tmp_path / "S.h5").surfaces) == {"A", "B"}


def test_write_report_holds_the_folder_lock_across_read_and_rename(tmp_path, monkeypatch):
    """The lock used by the test above is the one write_report takes."""
    held = []
    original = report_file.directory_lock

    def recording_lock(path):
        held.append(Path(path))
        return original(path)

    monkeypatch.setattr(report_file, "directory_lock", recording_lock)
    write_report(tmp_path / "R.h5", {}, config=None, command_line="x", objective_info=INFO)
    assert held == [tmp_path / "R.h5"]


# ------------------------------------------------------------------ signals, real processes
@pytest.fixture(scope="module")
def previous(tmp_path_factory) -> Path:
    """A folder with a report (spectrum, classify, sharpness) and its figures and HTML."""
    folder = tmp_path_factory.mktemp("previous")
    config = tmp_path_factory.mktemp("config") / "fast.yaml"
    config.write_text(FAST_CONFIG)
    cli("report", "--out", "R.h5", "--no-surface", "--quiet", "--config", str(config), cwd=folder)
    return folder


def wait_for_signal_handlers(pid: int, signum: int, timeout: float = 120) -> None:
    """Wait until process ``pid`` catches ``signum`` (Linux: the ``SigCgt`` mask of
    ``/proc/PID/status``). Before that, in the first instants of the interpreter, the signal has
    its default action, which no Python code can change; the tests below start after it."""
    status = Path(f"/proc/{pid}/status")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines())
        except (OSError, ValueError):
            return  # no /proc, or the process is gone
        if int(fields["SigCgt"], 16) >> (signum - 1) & 1:
            return
        time.sleep(0.001)


def signal_while_writing(
    command: list[str], folder: Path, watch: str, signum: int, delay: float
) -> tuple[subprocess.Popen, str, bool]:
    """Start ``command`` in ``folder``, wait until it handles ``signum``, then until a temporary
    file whose name starts with ``watch`` appears (or, with a negative delay, ``-delay``
    seconds), wait ``delay`` more seconds and send ``signum`` if the process still runs."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "landscape_cli", *command], cwd=folder, env=env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for_signal_handlers(proc.pid, signum)
        if delay < 0:
            time.sleep(-delay)
        else:
            deadline = time.monotonic() + 300
            while proc.poll() is None and time.monotonic() < deadline:
                if any(name.startswith(watch) for name in os.listdir(folder)):
                    break
                time.sleep(0.0005)
            time.sleep(delay)
        sent = proc.poll() is None
        if sent:
            proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc, stderr, sent


DELAYS = [-1.0, 0.0, 0.001, 0.003, 0.01, 0.03]
EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def assert_complete_or_unchanged(folder: Path, before: dict[str, bytes]) -> None:
    after = files(folder)
    assert temporary_files(folder) == []
    assert set(after) == set(before)
    for name, data in after.items():
        if data == before[name]:
            continue
        if name.endswith(".png"):
            assert data.startswith(b"\x89PNG") and data.endswith(b"IEND\xaeB`\x82"), name
        elif name.endswith(".html"):
            assert data.rstrip().endswith(b"</html>"), name
        elif name.endswith(".h5"):
            read_report(folder / name)


def assert_exit(proc: subprocess.Popen, stderr: str, signum: int, sent: bool) -> None:
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    if sent:
        # -signum: ended by the signal itself, which a shell reports as the same 128 + N (CPython
        # re-raises SIGINT at exit once a KeyboardInterrupt has passed through some C paths)
        assert proc.returncode in (0, EXIT[signum], -signum), stderr
        if proc.returncode:
            word = "interrupted" if signum == signal.SIGINT else "terminated"
            assert stderr.strip().splitlines()[-1] == f"landscape: {word}", stderr
    else:
        assert proc.returncode == 0, stderr


#: What is written, and the prefix of its temporary files: the figures and page of a report, and
#: a report updated with a new section.
WRITES = {
    "figures": (["plot", "R.h5", "--html", "--quiet"], ".R-"),
    "report-update": (["spectrum", "--out", "R.h5", "--seed", "1", "--quiet", *FAST], ".R.h5."),
}


@pytest.mark.parametrize("write", list(WRITES))
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("delay", DELAYS)
def test_a_signal_while_writing_leaves_each_file_complete_or_as_it_was(
    previous, tmp_path, write, signum, delay
):
    folder = tmp_path / "out"
    shutil.copytree(previous, folder)
    before = files(folder)
    command, watch = WRITES[write]
    proc, stderr, sent = signal_while_writing(command, folder, watch, signum, delay)
    assert_exit(proc, stderr, signum, sent)
    assert_complete_or_unchanged(folder, before)


def test_signals_module_raises_a_swallowed_signal_at_the_next_check(handled_signals):
    signals.install()
    try:
        with pytest.raises(Terminated):
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)
            except Terminated:
                pass  # swallowed, as in a destructor
            signals.raise_if_received()
    finally:
        signals.uninstall()
    signals.raise_if_received()  # forgotten
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handed back


#: A signal that arrives in an exit callback, after the command has finished.
SIGNAL_AT_EXIT = """\
import atexit, os, signal, sys, time
atexit.register(lambda: (os.kill(os.getpid(), signal.{name}), time.sleep(2)))
sys.argv = ["landscape", "--help"]
from landscape_cli.console import main
main()
"""


@pytest.mark.parametrize("signum", signals.SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_signal_during_the_teardown_after_a_command_ends_it_with_one_line(tmp_path, signum):
    code = SIGNAL_AT_EXIT.format(name=signal.Signals(signum).name)
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env(), capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    word = "interrupted" if signum == signal.SIGINT else "terminated"
    assert proc.returncode == EXIT[signum] and proc.stderr == f"landscape: {word}\n", proc.stderr
    assert "Usage" in proc.stdout  # the command itself finished and flushed


# ------------------------------------------------------------------ unwritable places, full disks
def unwritable_folder() -> Path:
    """A folder in which even root cannot create a file (sysfs), or skip."""
    folder = Path("/sys")
    try:
        os.close(os.open(folder / ".landscape-test", os.O_CREAT | os.O_WRONLY, 0o600))
    except OSError:
        return folder
    pytest.skip("/sys accepts new files here")


#: The default loss, leaving a mark the first time it runs.
MARKING_LOSS = """\
import pathlib

import torch.nn.functional as F


def loss(model, batch):
    pathlib.Path("loss-evaluated").touch()
    return F.cross_entropy(model(batch[0]), batch[1])
"""


@pytest.mark.parametrize(
    "args",
    [
        ["spectrum", "--out", "{folder}/r.h5"],
        ["check", "--max", "loss=10", "--junit", "{folder}/checks.xml"],
        ["report", "--out", "{folder}/r.h5"],
    ],
    ids=["spectrum-out", "check-junit", "report-out"],
)
def test_an_output_folder_that_takes_no_new_file_is_refused_before_the_analysis(tmp_path, args):
    folder = unwritable_folder()
    (tmp_path / "marked.py").write_text(MARKING_LOSS)
    args = [a.format(folder=folder) for a in args]
    proc = run_cli(*args, "--loss", "marked.py:loss", cwd=tmp_path)
    one_error_line(proc, 2, f"cannot create files in {folder}")
    assert not (tmp_path / "loss-evaluated").exists()  # refused before the model was loaded


def test_a_folder_at_a_figure_or_page_name_is_refused_before_the_analysis(tmp_path):
    (tmp_path / "R.html").mkdir()
    proc = run_cli("report", "--out", "R.h5", cwd=tmp_path)
    one_error_line(proc, 2, "R.html is a directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["R.html"]
    (tmp_path / "R.html").rmdir()
    (tmp_path / "R-density.png").mkdir()
    proc = run_cli("report", "--out", "R.h5", cwd=tmp_path)
    one_error_line(proc, 2, "R-density.png is a directory")


#: The largest file a child of :func:`limit_file_size` may write: less than the report of
#: ``previous`` and its HTML page, so that rewriting either fails.
FILE_SIZE_LIMIT = 30_000


def limit_file_size() -> None:
    """In the child: files may not grow beyond :data:`FILE_SIZE_LIMIT`, as on a nearly full disk
    (EFBIG instead of ENOSPC; SIGXFSZ ignored so that the write fails rather than the process)."""
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))


def test_a_full_disk_is_one_line_exit_74_and_keeps_the_old_report(previous, tmp_path):
    folder = tmp_path / "out"
    shutil.copytree(previous, folder)
    before = files(folder)
    assert len(before["R.h5"]) > FILE_SIZE_LIMIT and len(before["R.html"]) > FILE_SIZE_LIMIT
    proc = run_cli(
        "spectrum", "--out", "R.h5", "--seed", "1", *FAST, cwd=folder, preexec_fn=limit_file_size
    )
    one_error_line(proc, 74, "R.h5: could not be written (File too large)")
    assert files(folder) == before and temporary_files(folder) == []
    proc = run_cli("plot", "R.h5", "--html", cwd=folder, preexec_fn=limit_file_size)
    one_error_line(proc, 74, "could not be written (File too large)")
    assert_complete_or_unchanged(folder, before)
