"""Run a command and read its kernel peak RSS (``wait4``), from a small launcher process.

A child's ``ru_maxrss`` starts from its parent's resident size at fork (the pages exist until
exec), so a command forked straight from a large pytest process would report the test runner's
memory. The launcher is a fresh ``python -S`` of a few MiB: it forks the command, waits, and
writes the command's exit status and peak RSS to a file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

_LAUNCHER = r"""
import json, os, sys
out, argv = sys.argv[1], sys.argv[2:]
pid = os.fork()
if pid == 0:
    os.execvp(argv[0], argv)
_, status, usage = os.wait4(pid, 0)
with open(out, "w") as f:
    json.dump({"code": os.waitstatus_to_exitcode(status), "maxrss_kib": usage.ru_maxrss}, f)
"""


def run_measured(argv: list[str], env: dict | None = None, timeout: float = 600, input: bytes | None = None):
    """(returncode, stdout, stderr, peak RSS bytes) of ``argv`` run in a fresh process."""
    fd, result = tempfile.mkstemp(prefix="peak-rss-")
    os.close(fd)
    try:
        p = subprocess.run([sys.executable, "-S", "-c", _LAUNCHER, result, *argv], env=env, input=input,
                           capture_output=True, timeout=timeout)
        with open(result) as f:
            data = json.load(f)
        return data["code"], p.stdout, p.stderr, data["maxrss_kib"] * 1024
    finally:
        os.unlink(result)
