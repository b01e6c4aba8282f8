"""Runs a command and writes its peak resident set size (KiB) to a file: the parent that
tests/support.rs measures `spanline` through.

Usage: python3 tests/peak_rss.py OUT_FILE PROGRAM [ARGS...]

Why a parent of its own: the kernel carries a process's peak RSS across exec, and a child that
the test process spawns starts with the test process's peak (posix_spawn shares its memory
until exec). This small, freshly started parent forks the command instead, so the figure
`wait4` reports is the command's own. SIGTERM to this parent kills the command (SIGKILL) and
still reports; the exit code is the command's (128 + signal when it was killed).
"""

import os
import signal
import sys

out, argv = sys.argv[1], sys.argv[2:]
pid = os.fork()
if pid == 0:
    try:
        os.execv(argv[0], argv)
    finally:
        os._exit(127)


def stop(_signum, _frame):
    os.kill(pid, signal.SIGKILL)


signal.signal(signal.SIGTERM, stop)
_, status, usage = os.wait4(pid, 0)
with open(out, "w") as f:
    f.write(str(usage.ru_maxrss))
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
