"""The memory a run may take on the CPU: the system's available memory, lowered by the limits
set on the process (rlimits, cgroups v1 and v2), and a run that respects a real limit."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from landscape_cli.problem import memory

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parents[1]
GIB = 1 << 30


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """A fake /proc and /sys/fs/cgroup with 8 GiB available and no limits."""
    proc, cgroup = tmp_path / "proc", tmp_path / "cgroup"
    proc.mkdir()
    cgroup.mkdir()
    (tmp_path / "meminfo").write_text(
        f"MemTotal: 25000000 kB\nMemAvailable: {8 * GIB // 1024} kB\n"
    )
    (proc / "status").write_text("Name:\tpython\nVmSize:\t 1000000 kB\nVmData:\t  400000 kB\n")
    (proc / "cgroup").write_text("0::/\n")
    monkeypatch.setattr(memory, "MEMINFO", tmp_path / "meminfo")
    monkeypatch.setattr(memory, "PROC_SELF", proc)
    monkeypatch.setattr(memory, "CGROUP_ROOT", cgroup)
    monkeypatch.setattr(resource, "getrlimit", lambda limit: (resource.RLIM_INFINITY,) * 2)
    return proc, cgroup


def write(folder: Path, **files: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name.replace("_", ".", 1)).write_text(text)


def test_without_limits_it_is_the_available_memory(machine):
    assert memory.available_memory(CPU) == 8 * GIB


def test_a_cgroup_v2_limit_counts_usage_without_the_inactive_page_cache(machine):
    proc, cgroup = machine
    (proc / "cgroup").write_text("0::/job/step\n")
    write(cgroup / "job", memory_max="max\n", memory_current="5\n")
    write(
        cgroup / "job" / "step",
        memory_max="3000000000\n",
        memory_current="1200000000\n",
        memory_stat="anon 1000000000\ninactive_file 200000000\nactive_file 1\n",
    )
    assert memory.available_memory(CPU) == 3_000_000_000 - 1_000_000_000


def test_the_tightest_ancestor_of_a_cgroup_v1_sets_the_room(machine):
    proc, cgroup = machine
    (proc / "cgroup").write_text("5:cpu,cpuacct:/x\n4:memory:/pod/box\n0::/\n")
    unlimited = "9223372036854771712\n"
    write(cgroup / "memory", memory_limit_in_bytes=unlimited, memory_usage_in_bytes="9\n")
    write(
        cgroup / "memory" / "pod",
        memory_limit_in_bytes="2000000000\n",
        memory_usage_in_bytes="1500000000\n",
        memory_stat="total_inactive_file 100000000\n",
    )
    write(
        cgroup / "memory" / "pod" / "box",
        memory_limit_in_bytes=unlimited,
        memory_usage_in_bytes="1400000000\n",
    )
    assert memory.available_memory(CPU) == 2_000_000_000 - 1_400_000_000


def test_address_space_and_data_rlimits_count_what_the_process_maps(machine, monkeypatch):
    limits = {resource.RLIMIT_AS: 3 * GIB, resource.RLIMIT_DATA: resource.RLIM_INFINITY}
    monkeypatch.setattr(resource, "getrlimit", lambda limit: (limits.get(limit, -1),) * 2)
    assert memory.available_memory(CPU) == 3 * GIB - 1_000_000 * 1024
    limits[resource.RLIMIT_DATA] = GIB
    assert memory.available_memory(CPU) == GIB - 400_000 * 1024


def test_unreadable_files_fall_back_to_what_is_known(machine, monkeypatch, tmp_path):
    monkeypatch.setattr(memory, "MEMINFO", tmp_path / "absent")
    assert memory.available_memory(CPU) == memory.FALLBACK
    proc, cgroup = machine
    (proc / "cgroup").write_text("0::/g\n")
    write(cgroup / "g", memory_max="1000\n", memory_current="garbage\n")
    assert memory.available_memory(CPU) == memory.FALLBACK


# A run under a real address-space limit, set in the child once torch is mapped: ROOM bytes more.
UNDER_LIMIT = """
import resource, sys
import torch
import landscape_cli.cli.app
status = open("/proc/self/status").read()
size = int(next(l.split()[1] for l in status.splitlines() if l.startswith("VmSize:"))) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + int(sys.argv[1]), resource.RLIM_INFINITY))
sys.argv = ["landscape", *sys.argv[2:]]
from landscape_cli.console import main
main()
"""
NET = """
from torch import nn

def build():
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.Tanh(), nn.Conv2d(16, 16, 3, padding=1), nn.Tanh(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )
"""
ROOM = 500 << 20


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's /proc")
def test_under_a_memory_limit_the_cached_graph_fails_and_auto_streams(tmp_path):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1024, 3, 32, 32, generator=generator)
    torch.save({"x": x, "y": torch.randint(0, 10, (1024,), generator=generator)}, tmp_path / "d.pt")
    (tmp_path / "net.py").write_text(NET)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def landscape(mode: str) -> subprocess.CompletedProcess:
        args = ["spectrum", "--model", "net.py:build", "--data", "d.pt", "--hvp-mode", mode]
        args += ["--lambda-max", "--max-iter", "8", "--threads", "1", "--json", "--quiet"]
        return subprocess.run(
            [sys.executable, "-c", UNDER_LIMIT, str(ROOM), *args],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip

    inspect = ["inspect", "--model", "net.py:build", "--data", "d.pt", "--json"]
    unlimited = subprocess.run(
        [sys.executable, "-m", "landscape_cli", *inspect],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert unlimited.returncode == 0, unlimited.stderr
    graph = json.loads(unlimited.stdout)["graph_megabytes"] * 2**20
    assert graph > ROOM  # the cached graph cannot fit
    cached = landscape("cached")
    assert cached.returncode != 0
    assert "ran out of memory" in cached.stderr, cached.stderr
    auto = landscape("auto")
    assert auto.returncode == 0, auto.stderr
    payload = json.loads(auto.stdout)
    assert payload["hvp_mode"] == "streaming"
    assert payload["lambda_max"] > 0
