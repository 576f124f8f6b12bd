"""How the engine behaves as the bot's child process: below the bot's CPU priority, deaf to stop signals."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

# Above the bot's own: on a busy CPU the kernel gives the bot's event loop (Discord's heartbeats, answers within
# 3 s) the CPU first, and the engine the rest.
NICENESS = 10
MAX_NICE = 19


def ignore_stop_signals() -> None:
    """Let SIGTERM and SIGINT pass: the bot stops the engine by closing its stdin, after the running job.

    A Ctrl-C in a terminal reaches the whole foreground process group, and a stop of the service unit without
    KillMode=mixed its whole control group; the bot handles both and lets the running job finish first."""
    for stop in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop, signal.SIG_IGN)


def lower_priority(by: int = NICENESS) -> int:
    """Lower every thread of this process `by` nice levels below the calling thread's; return the new nice value.

    Raises OSError where the system refuses (a seccomp filter without setpriority)."""
    target = min(MAX_NICE, os.getpriority(os.PRIO_PROCESS, 0) + by)
    os.setpriority(os.PRIO_PROCESS, 0, target)
    # Linux keeps a nice value per thread, and imports (numpy's BLAS pool) have started threads already; the
    # threads started from here on inherit the calling thread's value.
    tasks = Path("/proc/self/task")
    for thread in tasks.iterdir() if tasks.is_dir() else ():
        with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
            os.setpriority(os.PRIO_PROCESS, int(thread.name), target)
    return target
