"""Measure one fresh process: the kernel's peak RSS (``wait4``'s ``ru_maxrss``), wall time, output.

Every number the benchmark reports comes from here. A process inherits its parent's RSS
high-water mark as the floor of its own ``ru_maxrss`` (fork copies the page-table counts, execve
records them), so the measured program runs as the child of a bare ``python -S`` launcher (see
:data:`_LAUNCHER`): a child of a 300 MB notebook would otherwise report >= 300 MB.
"""

from __future__ import annotations

import dataclasses
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

from ...urls import redact


@dataclasses.dataclass
class Measured:
    """One finished child process: kernel peak RSS (wait4), wall time, exit status, output."""

    argv: list[str]
    returncode: int
    wall_s: float
    peak_rss_bytes: int
    user_s: float
    sys_s: float
    stdout: str
    stderr: str
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def json(self) -> dict | None:
        """The child's JSON summary (the whole stdout, else its last line), or None."""
        text = self.stdout.strip()
        if not text:
            return None
        for candidate in (text, text.splitlines()[-1]):
            try:
                value = json.loads(candidate)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
        return None

    def error_line(self) -> str:
        if self.timed_out:
            return f"timed out after {self.wall_s:.0f} s (killed)"
        lines = [ln for ln in self.stderr.strip().splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("error:")]
        last = (errors or lines or [f"exit status {self.returncode}"])[-1]
        if self.returncode < 0:
            last = f"killed by signal {-self.returncode}: {last}"
        return redact(last.strip())[:500]


def _wait_exit(pid: int, timeout: float | None) -> bool:
    """Wait until ``pid`` (our unreaped child) exits, without reaping it; at the timeout SIGKILL
    its process group (it leads one). Returns True when it had to be killed.

    The child stays a zombie until ``os.wait4`` reaps it, so its pid (and process group id)
    cannot be recycled while we might signal it.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        fd = None
    if fd is not None:
        try:
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            if poller.poll(None if timeout is None else max(0.0, timeout) * 1000):
                return False
        finally:
            os.close(fd)
    else:  # pragma: no cover - kernels without pidfd_open (< 5.3)
        while deadline is None or time.monotonic() < deadline:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return False
            time.sleep(0.005)
    _kill_group(pid)
    return True


#: Runs the measured program as *its* child and reports that child's rusage. Needed because a
#: process inherits its parent's RSS high-water mark as the floor of its own ``ru_maxrss``: fork
#: copies the parent's page-table counts into the new mm, and execve records the old mm's
#: high-water mark in the signal struct that ``ru_maxrss`` reports (a child of a 300 MB notebook
#: would report >= 300 MB). This launcher is a bare ``python -S`` (~8 MB), so the measured
#: program's floor is ~8 MB -- below any Python program's own peak.
_LAUNCHER = r"""
import os, sys, time
result, argv = sys.argv[1], sys.argv[2:]
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(argv[0], argv)
    except BaseException as exc:
        os.write(2, ("error: cannot start %s: %s\n" % (argv[0], exc)).encode())
    os._exit(127)
_, status, ru = os.wait4(pid, 0)
wall = time.perf_counter() - start
with open(result, "w") as f:
    f.write("%d %d %r %r %r" % (status, ru.ru_maxrss, wall, ru.ru_utime, ru.ru_stime))
code = os.waitstatus_to_exitcode(status)
os._exit(code if code >= 0 else 128 - code)
"""


def run_measured(argv: Sequence[str], *, env: dict | None = None, cwd: str | None = None,
                 timeout: float | None = None, launcher_python: str | None = None,
                 stdout_path: str | None = None) -> Measured:
    """Run ``argv`` in a fresh process; measure its wall time and kernel peak RSS (``wait4``).

    The program runs under a minimal launcher (see :data:`_LAUNCHER`) that ``os.wait4``-s it
    and reports its ``ru_maxrss``, so the caller's own size does not leak into the number.
    stdout/stderr go to temp files (no pipe can fill up) and are returned as text; with
    ``stdout_path`` stdout goes to that file instead and is not read back (a large report). At
    the timeout the whole process group is killed.
    """
    argv = [str(a) for a in argv]
    fd, result_path = tempfile.mkstemp(prefix="sekiops-bench-", suffix=".rusage")
    os.close(fd)
    os.unlink(result_path)
    launcher = [launcher_python or sys.executable, "-S", "-c", _LAUNCHER, result_path]
    try:
        with (open(stdout_path, "w+b") if stdout_path else tempfile.TemporaryFile()) as out, \
                tempfile.TemporaryFile() as err:
            start = time.perf_counter()
            proc = subprocess.Popen(launcher + argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
                                    cwd=cwd, start_new_session=True)
            try:
                timed_out = _wait_exit(proc.pid, timeout)
            except BaseException:  # e.g. KeyboardInterrupt: the launcher and the program go
                _kill_group(proc.pid)
                os.wait4(proc.pid, 0)
                proc.returncode = -9
                raise
            wall = time.perf_counter() - start
            _kill_group(proc.pid)  # still unreaped, so still ours: stragglers the program left go too
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            out.seek(0)
            err.seek(0)
            stdout = "" if stdout_path else out.read().decode("utf-8", "replace")
            stderr = err.read().decode("utf-8", "replace")
        try:
            with open(result_path) as f:
                raw_status, raw_maxrss, raw_wall, raw_user, raw_system = f.read().split()
            returncode = os.waitstatus_to_exitcode(int(raw_status))
            peak, wall = int(raw_maxrss) * 1024, float(raw_wall)
            user, system = float(raw_user), float(raw_system)
        except (OSError, ValueError):  # killed, or the launcher failed
            returncode = proc.returncode if proc.returncode != 0 else 1
            peak, user, system = 0, usage.ru_utime, usage.ru_stime
    finally:
        try:
            os.unlink(result_path)
        except FileNotFoundError:
            pass
    return Measured(argv=argv, returncode=returncode, wall_s=wall, peak_rss_bytes=peak, user_s=user,
                    sys_s=system, stdout=stdout, stderr=stderr, timed_out=timed_out)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
