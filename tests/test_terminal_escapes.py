"""Text from a file reaches the terminal as printable text: escape sequences in a state-dict key,
a config key, a module name or a file name are shown as ``\\x1b``, never sent, on stderr and on
stdout alike, even when they are pipes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hostile import linear_problem

from landscape_cli.errors import InputError, printable

ROOT = Path(__file__).resolve().parents[1]
#: Retitle the terminal (OSC), clear the screen and colour red (CSI), a C1 CSI, a bell.
SEQUENCES = "\x1b]0;pwned\x07\x1b[2J\x1b[31m\x9b1m\x07"


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-m", "landscape_cli", *args], cwd=cwd, env=env, capture_output=True,
        timeout=300,
    )  # fmt: skip


def assert_no_control_bytes(stream: bytes) -> None:
    text = stream.decode("utf-8", "replace")
    assert not [ch for ch in text if not ch.isprintable() and ch != "\n"], text


def test_printable_shows_control_characters_and_undecodable_bytes_as_escapes():
    assert printable(SEQUENCES) == "\\x1b]0;pwned\\x07\\x1b[2J\\x1b[31m\\x9b1m\\x07"
    assert printable("caf\udce9.pt\r\n\u200b") == "caf\\xe9.pt\\r\\n\\u200b"
    assert printable("λ_max ± σ · 中文") == "λ_max ± σ · 中文"


def test_an_error_message_is_one_printable_line():
    error = InputError(f"unexpected key {SEQUENCES!s}", hint="line\nbreak")
    assert str(error).isprintable()


def test_a_state_dict_key_with_escape_sequences_is_shown_escaped(tmp_path):
    model, data, _ = linear_problem(tmp_path)
    evil = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(3, 4), f"bias{SEQUENCES}": torch.zeros(3)}, evil)
    proc = run("inspect", str(evil), "--model", f"{model}:build", "--data", str(data), cwd=tmp_path)
    assert proc.returncode == 2
    assert b"\\x1b]0;pwned" in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert_no_control_bytes(proc.stderr)


def test_a_config_key_with_escape_sequences_is_shown_escaped(tmp_path):
    config = tmp_path / "c.yaml"
    escaped = SEQUENCES.encode("unicode_escape").decode("ascii")  # YAML's "\\x1b" escapes
    config.write_text(f'"seed{escaped}": 1\n', encoding="utf-8")
    proc = run("inspect", "--config", str(config), cwd=tmp_path)
    assert proc.returncode == 2 and b"\\x1b[2J" in proc.stderr
    assert_no_control_bytes(proc.stderr)


def test_a_module_name_with_escape_sequences_is_shown_escaped_in_the_table(tmp_path):
    _, data, _ = linear_problem(tmp_path)
    (tmp_path / "named.py").write_text(
        "from torch import nn\n\n\ndef build():\n    model = nn.Sequential()\n"
        f"    model.add_module({SEQUENCES!r}, nn.Linear(4, 3))\n    return model\n"
    )
    proc = run("inspect", "--model", "named.py:build", "--data", str(data), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert b"\\x1b]0;pwned" in proc.stdout
    assert_no_control_bytes(proc.stdout)
    assert_no_control_bytes(proc.stderr)


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS file names must be UTF-8")
def test_an_undecodable_output_name_is_written_and_shown_escaped(tmp_path):
    name = os.fsdecode(b"r\xff.h5")
    proc = run("spectrum", "sample:saddle", "--out", name, "--no-density", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / name).exists()
    proc = run("plot", name, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert b"r\\xff-" in proc.stdout
    assert_no_control_bytes(proc.stdout)
