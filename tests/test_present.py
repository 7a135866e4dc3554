"""The project speaks of its present: code, tests, docs and configs name no work period.

A comment, docstring, test name or page says what the code does now; when and why it came to be
lives in git and CHANGELOG.md. The markers checked here are the ones such history leaves behind:
a work session or an issue by number, the findings of a review, a helper by number.
CHANGELOG.md is the one file allowed to hold them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HISTORY = re.compile(r"session \d|issue[ -]?#?\d|review\s+finding|helper-\d", re.IGNORECASE)
#: Files that record history by design.
HISTORY_FILES = {"CHANGELOG.md"}
#: Hidden folders with project files in them; every other hidden folder (.git, caches) is skipped.
HIDDEN_PROJECT_FOLDERS = {".ci", ".github"}
SKIPPED_FOLDERS = {"__pycache__", "build", "dist", "node_modules", "venv"}


def project_files(root: Path) -> Iterator[Path]:
    """Every text file of the project under ``root`` but the history files."""
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(
            name
            for name in subfolders
            if (not name.startswith(".") or name in HIDDEN_PROJECT_FOLDERS)
            and name not in SKIPPED_FOLDERS
            and not name.endswith(".egg-info")
        )
        for name in sorted(files):
            if name not in HISTORY_FILES:
                yield Path(folder) / name


def history_markers(path: Path) -> list[tuple[int, str]]:
    """``(line number, line)`` for every line of a text file that names a work period."""
    data = path.read_bytes()
    if b"\0" in data[:8192]:
        return []  # binary: checkpoints, images
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        return []
    return [(i, line.strip()) for i, line in enumerate(lines, 1) if HISTORY.search(line)]


def test_no_file_names_a_session_issue_review_finding_or_helper():
    found = [
        f"{path.relative_to(ROOT)}:{i}: {line}"
        for path in project_files(ROOT)
        for i, line in history_markers(path)
    ]
    assert not found, "history belongs in git and CHANGELOG.md:\n" + "\n".join(found)


def test_the_scan_finds_a_planted_marker_in_code_tests_and_docs(tmp_path):
    # the markers are assembled here, so that this file does not hold them itself
    planted = {
        "landscape_cli/module.py": "x = 0  # {} {}\n".format("Issue", 6),
        "tests/test_thing.py": "# ---- {} ({} 4)\n".format("review " + "findings", "session"),
        "docs/page.md": "Fixed by {}-{}.\n".format("helper", 20),
        "configs/run.yaml": "seed: 1  # {}#{}\n".format("issue", 8),
        "CHANGELOG.md": "- {} {}: shared HVPs\n".format("issue", 6),
        "docs/image.png": "\0{} {}".format("issue", 6),
        ".git/notes": "{} {}\n".format("issue", 6),
        "README.md": "Issued 6 times, reviewed in session; SIAM Review 58.\n",
    }
    for name, content in planted.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(content, encoding="utf-8")
    flagged = {
        path.relative_to(tmp_path).as_posix()
        for path in project_files(tmp_path)
        if history_markers(path)
    }
    assert flagged == {
        "landscape_cli/module.py",
        "tests/test_thing.py",
        "docs/page.md",
        "configs/run.yaml",
    }
