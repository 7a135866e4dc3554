"""How much memory this process may still take: the device's free memory, and on the CPU the
room left under the limits set on the process (``ulimit -v``/``-d``, a container's cgroup)."""

from __future__ import annotations

from pathlib import Path

import torch

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF = Path("/proc/self")
MEMINFO = Path("/proc/meminfo")
#: cgroup v1 writes "no limit" as a page-aligned 2^63 - 1; anything this large is no limit.
NO_LIMIT = 1 << 60
#: What the CPU is assumed to have free when the system does not say.
FALLBACK = 4 << 30


def available_memory(device: torch.device) -> int:
    """Bytes this process can still allocate on ``device``.

    CUDA: the free memory ``mem_get_info`` reports. CPU: the system's ``MemAvailable``, lowered
    to the room left under each limit set on the process, where one is: the address-space and
    data rlimits (less the process's ``VmSize`` and ``VmData``), and the ``memory.max``
    (cgroup v2) or ``memory.limit_in_bytes`` (v1) of its cgroup and every ancestor, less their
    usage without the inactive page cache (reclaimable, as ``docker stats`` counts it).
    """
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    rooms = [_meminfo_available(), *_rlimit_rooms(), *_cgroup_rooms()]
    known = [room for room in rooms if room is not None]
    return max(0, min(known)) if known else FALLBACK


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


def _fields(text: str | None, scale: int = 1) -> dict[str, int]:
    """``name value`` or ``Name: value kB`` lines as ``{name: value · scale}``."""
    found: dict[str, int] = {}
    for line in (text or "").splitlines():
        parts = line.replace(":", " ").split()
        if len(parts) >= 2 and parts[1].isdigit():
            found[parts[0]] = int(parts[1]) * scale
    return found


def _meminfo_available() -> int | None:
    return _fields(_read(MEMINFO), 1024).get("MemAvailable")


def _rlimit_rooms() -> list[int]:
    try:
        import resource
    except ImportError:  # not on POSIX
        return []
    status = _fields(_read(PROC_SELF / "status"), 1024)
    rooms = []
    for limit, used in ((resource.RLIMIT_AS, "VmSize"), (resource.RLIMIT_DATA, "VmData")):
        soft, _hard = resource.getrlimit(limit)
        if soft != resource.RLIM_INFINITY and soft < NO_LIMIT and used in status:
            rooms.append(soft - status[used])
    return rooms


def _cgroup_rooms() -> list[int]:
    """The room under the memory limit of the process's cgroup and of each of its ancestors."""
    rooms = []
    for line in (_read(PROC_SELF / "cgroup") or "").splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":  # v2
            folder, files = CGROUP_ROOT, ("memory.max", "memory.current", "inactive_file")
        elif "memory" in controllers.split(","):  # v1
            folder = CGROUP_ROOT / "memory"
            files = ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
        else:
            continue
        rooms += _rooms_along(folder, path, *files)
    return rooms


def _rooms_along(folder: Path, path: str, limit: str, usage: str, inactive: str) -> list[int]:
    rooms = []
    parts = [part for part in path.split("/") if part and part not in (".", "..")]
    for depth in range(len(parts), -1, -1):
        group = folder.joinpath(*parts[:depth])
        text = (_read(group / limit) or "").strip()
        if not text.isdigit() or int(text) >= NO_LIMIT:
            continue
        used = (_read(group / usage) or "").strip()
        if not used.isdigit():
            continue
        cache = _fields(_read(group / "memory.stat")).get(inactive, 0)
        rooms.append(int(text) - max(0, int(used) - cache))
    return rooms
