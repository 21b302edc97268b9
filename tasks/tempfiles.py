"""Hidden temp entries named by their owner, so a later run removes those a killed run left behind;
and the file lock that concurrent runs take turns under.

A name is `<prefix><hostname>-<pid>-<start>-<random><suffix>`, where <start> is the process's start
time (field 22 of /proc/<pid>/stat, in clock ticks since boot). An entry is stale when it was made
on this host and its pid is gone or now belongs to a later process (pid reuse: another start time).
Entries of other hosts (a shared network folder) and names we cannot parse are never touched.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on the file at path (created if missing) for the `with` block.

    The kernel releases it when the process dies, so a killed run never leaves a lock behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot, or None when no such process runs."""
    if not Path("/proc/self/stat").exists():  # not Linux: whether the pid runs is all we can tell
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass  # it runs, as another user
        return "0"
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2 (the command name) may hold spaces and parentheses: count fields after the last ')'.
    return stat.rsplit(")", 1)[1].split()[19]


def _host() -> str:
    return socket.gethostname()


def temp_name(prefix: str, suffix: str = "") -> str:
    """A fresh hidden name that records who owns it (this host, pid and process start time)."""
    pid = os.getpid()
    return f"{prefix}{_host()}-{pid}-{_start_time(pid)}-{uuid.uuid4().hex[:12]}{suffix}"


def is_stale(name: str, prefix: str, suffix: str = "") -> bool:
    """True for an entry of this host whose owning process no longer runs."""
    if not (name.startswith(prefix) and name.endswith(suffix)):
        return False
    parts = name[len(prefix):len(name) - len(suffix)].rsplit("-", 3)  # a hostname may hold '-'
    if len(parts) != 4 or not parts[1].isdigit() or parts[0] != _host():
        return False
    return _start_time(int(parts[1])) != parts[2]


def remove_stale(folder: Path, patterns: tuple[tuple[str, str], ...]) -> list[str]:
    """Remove the stale entries of folder matching any (prefix, suffix); return their names."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    removed = []
    for name in names:
        if not any(is_stale(name, prefix, suffix) for prefix, suffix in patterns):
            continue
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)  # another run may have removed it first
        removed.append(name)
    return removed
