"""A process's CPU time, resident memory and identity, read from /proc (Linux), and pinned child processes."""

from __future__ import annotations

import os
import resource
from collections.abc import Callable
from dataclasses import dataclass

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
"""Clock ticks per second, the unit of utime and stime in /proc/PID/stat."""


@dataclass(frozen=True)
class CpuTimes:
    """CPU seconds a process spent in user and kernel mode (all its threads, not its children)."""

    user: float
    system: float

    @property
    def total(self) -> float:
        """User plus system seconds."""
        return self.user + self.system

    def __sub__(self, earlier: CpuTimes) -> CpuTimes:
        return CpuTimes(self.user - earlier.user, self.system - earlier.system)

    def __add__(self, other: CpuTimes) -> CpuTimes:
        return CpuTimes(self.user + other.user, self.system + other.system)


def parse_stat(text: str, clock_ticks: int = CLOCK_TICKS) -> CpuTimes:
    """The CPU times in the text of /proc/PID/stat; ValueError if it is not one."""
    # comm (field 2) may itself hold spaces and ')', so the fields after it start past the last ')'
    end = text.rfind(")")
    fields = text[end + 2 :].split() if end >= 0 else []
    if len(fields) < 13:
        raise ValueError(f"not a /proc/PID/stat line: {text[:80]!r}")
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15
    return CpuTimes(int(fields[11]) / clock_ticks, int(fields[12]) / clock_ticks)


def parse_rss(status: str) -> int:
    """Resident memory in bytes from the text of /proc/PID/status; ValueError if VmRSS is missing."""
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            value, unit = line.split()[1:3]
            if unit != "kB":
                raise ValueError(f"unexpected VmRSS unit {unit!r}")
            return int(value) * 1024
    raise ValueError("no VmRSS line in /proc/PID/status")


def cpu_times(pid: int) -> CpuTimes:
    """CPU times the running process ``pid`` has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        return parse_stat(f.read())


def tree_cpu_times(pid: int) -> CpuTimes:
    """CPU times of ``pid`` and of its live descendants (a server that serves from worker processes: granian)."""
    total = cpu_times(pid)
    for child in _children(pid):
        try:
            total = total + tree_cpu_times(child)
        except (FileNotFoundError, ProcessLookupError):
            pass  # ended meanwhile
    return total


def _children(pid: int) -> list[int]:
    children: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return children
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                children += [int(child) for child in f.read().split()]
        except FileNotFoundError:
            pass
    return children


def waited_children_cpu() -> CpuTimes:
    """CPU times of every child process this one has waited for so far (``RUSAGE_CHILDREN``).

    The difference across a ``subprocess.run`` is that program's CPU use, as long as no other child ends meanwhile.
    """
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return CpuTimes(usage.ru_utime, usage.ru_stime)


def rss_bytes(pid: int) -> int:
    """Resident memory of the running process ``pid``, in bytes."""
    with open(f"/proc/{pid}/status") as f:
        return parse_rss(f.read())


def executable(pid: int) -> str:
    """The resolved path of the program that process ``pid`` runs."""
    return os.path.realpath(f"/proc/{pid}/exe")


def pinned(cpu: int) -> Callable[[], None]:
    """A ``preexec_fn`` that pins the child to ``cpu`` and raises its open-file limit to the hard limit.

    It runs in the child before exec, so the pid Popen returns is the pinned program itself, not a wrapper.
    """

    def setup() -> None:
        os.sched_setaffinity(0, {cpu})
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (1 << 20 if hard == resource.RLIM_INFINITY else hard, hard))

    return setup
