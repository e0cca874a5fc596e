"""One scenario = one fresh process: persist, restore or anatomy of one state, and its idle baseline.

:class:`Scenarios` knows the stores, the child environment and the commands
(:mod:`.commands`); it runs each measured process (:func:`.measure.run_measured`), checks its
output (a restore must reproduce the input, size and sha256; an anatomy must count every byte),
measures the idle baseline (the same command on a ~1 kB state, same stores, median of N) and
turns an outcome into a row of the benchmark frame (:data:`COLUMNS`).

Rows of the modelled Sekiban byte[] path (``mode == "legacy"``, ``modelled == True``) carry
memory only: their time would be Python's transcoding loops, which says nothing about .NET.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import time
from collections.abc import Callable

from ...errors import UsageError
from ...units import MiB, format_bytes
from ...urls import redact
from . import commands
from .codec import DIRECTION, CodecFloor
from .inputs import backend_label, file_digest, generate_state, meminfo, package_root
from .measure import Measured, run_measured

MB = 10**6
IDLE_STATE_BYTES = 1000

#: The columns of a benchmark frame, in order.
COLUMNS = [
    "op", "mode", "variant", "backend", "size_label", "size_bytes", "gzip_backend", "ok", "error",
    "peak_rss_bytes", "baseline_rss_bytes", "overhead_bytes", "overhead_ratio",
    "wall_s", "baseline_wall_s", "op_s", "throughput_mib_s",
    "codec_mib_s", "ratio_to_codec", "paired_ratio_to_codec", "codec_zlib_mib_s", "ratio_to_zlib_codec",
    "process_ratio_to_codec", "paired_process_ratio_to_codec", "cpu_s", "threads", "json_check",
    "payload_location", "envelope_location", "compressed_bytes",
    "child_peak_rss_bytes", "peak_heap_bytes", "fsync_s", "verified", "command", "repeat", "run_id", "modelled",
]
#: Columns that are times (or derived from times): empty on modelled rows.
TIME_COLUMNS = ["wall_s", "baseline_wall_s", "op_s", "throughput_mib_s", "codec_mib_s", "ratio_to_codec",
                "paired_ratio_to_codec", "codec_zlib_mib_s", "ratio_to_zlib_codec", "process_ratio_to_codec",
                "paired_process_ratio_to_codec", "cpu_s"]

#: Persist variants the benchmark can run beside the default (``--variants``): each is one
#: ``name=value`` that changes one thing of the same ``sekiops persist`` command.
VARIANTS = {
    "threads": "--threads N (compression threads)",
    "check": "SEKIOPS_JSONCHECK=native|yajl (the JSON check's validator)",
}


def variant_args(variant: str | None) -> tuple[list[str], dict]:
    """(extra argv, extra environment) of a persist variant such as ``threads=1`` or ``check=yajl``."""
    if not variant:
        return [], {}
    name, _, value = variant.partition("=")
    if name == "threads" and value.isdigit() and int(value) >= 1:
        return ["--threads", value], {}
    if name == "check" and value in ("native", "yajl"):
        return [], {"SEKIOPS_JSONCHECK": value}

    raise UsageError(f"unknown benchmark variant {variant!r}: use threads=N or check=native|yajl")


def empty_row() -> dict:
    return {c: None for c in COLUMNS}


@dataclasses.dataclass
class Outcome:
    measured: Measured | None
    summary: dict | None
    ok: bool
    error: str | None
    command: str
    verified: bool | None = None

    @property
    def measurement(self) -> Measured:
        """The child's measurement: every outcome has one but a refused or failed set-up (never ok)."""
        assert self.measured is not None, "an outcome without a measurement is not ok"
        return self.measured

    @property
    def seconds(self) -> float:
        """Time inside the operation (the child's own ``total_ms``), else the process's wall time."""
        if self.summary and self.summary.get("total_ms"):
            return self.summary["total_ms"] / 1000.0
        return self.measurement.wall_s


class Scenarios:
    def __init__(self, *, workdir: str, state_url: str | None, blob_url: str | None, python: str,
                 heap: bool, verify: bool, repeat: int, baseline_repeats: int, timeout: float | None,
                 progress: Callable[[str], object] | None, memory_margin: float):
        self.workdir = os.path.abspath(workdir)
        self.run_id = time.strftime("%Y%m%d%H%M%S") + secrets.token_hex(2)
        self.run_dir = os.path.join(self.workdir, f"run-{self.run_id}")
        self.states_dir = os.path.join(self.workdir, "states")
        os.makedirs(self.run_dir, exist_ok=True)
        os.makedirs(self.states_dir, exist_ok=True)
        if state_url is None:
            if blob_url is not None:
                raise ValueError("blob_url without state_url: give both, or neither for the embedded default")
            state_url = "sqlite:///" + os.path.join(self.run_dir, "state.db")
            blob_url = os.path.join(self.run_dir, "blobs")
        self.state_url, self.blob_url = state_url, blob_url
        self.backend = backend_label(state_url, blob_url)
        self.service_id = f"bench-{self.run_id}"
        self.python, self.heap, self.verify = python, heap, verify
        self.repeat, self.baseline_repeats = max(1, int(repeat)), max(1, int(baseline_repeats))
        self.timeout, self.progress_fn, self.memory_margin = timeout, progress, memory_margin
        self._baselines: dict[tuple, tuple[int, float]] = {}
        self._idle_state: dict | None = None
        self._idle_persisted: set[tuple] = set()
        #: (state path, gzip, mode, op[, variant]) -> {round: seconds}, for paired ratios; walls: process wall
        self.scenario_rounds: dict[tuple, dict[int, float]] = {}
        self.scenario_walls: dict[tuple, dict[int, float]] = {}
        self.env = self._child_env()
        self.codec = CodecFloor(python, self.run_dir, self.run)

    # -- plumbing --

    def _child_env(self) -> dict:
        env = dict(os.environ)
        for name in ("SEKIOPS_STATE_URL", "SEKIOPS_BLOB_URL", "SEKIOPS_FAILPOINTS"):
            env.pop(name, None)
        root = package_root()
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["SEKIOPS_SPOOL_DIR"] = os.path.join(self.run_dir, "spool")  # other processes' temp files don't count
        if redact(self.state_url) != self.state_url:
            env["SEKIOPS_STATE_URL"] = self.state_url
        if self.blob_url and redact(self.blob_url) != self.blob_url:
            env["SEKIOPS_BLOB_URL"] = self.blob_url
        return env

    def progress(self, message: str) -> None:
        if self.progress_fn is not None:
            self.progress_fn(message)

    def store_args(self) -> list[str]:
        """``--state``/``--blob``; a URL carrying a secret (password, SAS) goes to the child through
        $SEKIOPS_STATE_URL/$SEKIOPS_BLOB_URL instead, since any local user can read a command line."""
        args = ["--service-id", self.service_id]
        if redact(self.state_url) == self.state_url:
            args += ["--state", self.state_url]
        if self.blob_url and redact(self.blob_url) == self.blob_url:
            args += ["--blob", self.blob_url]
        return args

    def projector(self, size_label: str, mode: str, gzip: str) -> str:
        return f"SekiopsBench-{self.run_id}-{size_label}-{mode}-{gzip}"

    def run(self, argv: list[str], gzip: str, size: int, extra_env: dict | None = None) -> Measured:
        env = dict(self.env, SEKIOPS_GZIP=gzip, **(extra_env or {}))
        timeout = self.timeout if self.timeout is not None else 120.0 + size / MB  # 1 s per MB on top of start-up
        return run_measured(argv, env=env, cwd=self.run_dir, timeout=timeout)

    def persist_argv(self, projector: str, in_path: str, mode: str, gzip: str, payload_threshold: int | None = None,
                     heap: bool = False) -> list[str]:
        return commands.persist_argv(self.python, mode, self.store_args(), projector, in_path, gzip,
                                     payload_threshold, heap)

    def restore_argv(self, projector: str, out_path: str, mode: str, heap: bool = False) -> list[str]:
        return commands.restore_argv(self.python, mode, self.store_args(), projector, out_path, self.verify, heap)

    def scenario_argv(self, op: str, mode: str, projector: str, out_path: str, heap: bool = False) -> list[str]:
        if op == "anatomy":
            return commands.anatomy_argv(self.python, self.store_args(), projector)
        return self.restore_argv(projector, out_path, mode, heap)

    # -- baselines --

    def idle_state(self) -> dict:
        if self._idle_state is None:
            path = os.path.join(self.states_dir, f"state-idle-{IDLE_STATE_BYTES}.json")
            self._idle_state = dict(generate_state(path, IDLE_STATE_BYTES), path=path)
        return self._idle_state

    def baseline(self, op: str, mode: str, gzip: str, payload_location: str | None) -> tuple[int, float] | None:
        """(peak RSS, wall s) of the same command on a tiny state, same stores: median of N runs.

        The tiny state takes the same path as the measured one: when the measured payload went to
        a blob, the idle payload is offloaded too (payload threshold 0), so the baseline includes
        the blob client's imports and connection set-up.
        """
        offload = payload_location == "blob"
        key = (op, mode, gzip, offload)
        if key in self._baselines:
            return self._baselines[key]
        idle = self.idle_state()
        threshold = 0 if offload else None
        projector = f"SekiopsBench-{self.run_id}-idle-{mode}-{gzip}-{'blob' if offload else 'inline'}"
        peaks, walls = [], []
        for _ in range(self.baseline_repeats):
            if op == "persist":
                argv = self.persist_argv(projector, idle["path"], mode, gzip, threshold, heap=self.heap)
            else:
                if (projector, gzip) not in self._idle_persisted:
                    m = self.run(self.persist_argv(projector, idle["path"], mode, gzip, threshold), gzip, 0)
                    if not m.ok:
                        self.progress(f"  idle persist for the {op} baseline failed: {m.error_line()}")
                        return None
                    self._idle_persisted.add((projector, gzip))
                argv = self.scenario_argv(op, mode, projector, os.path.join(self.run_dir, "idle-restore.out"),
                                          heap=self.heap)
            m = self.run(argv, gzip, 0)
            if not m.ok:
                self.progress(f"  baseline {op} {mode} failed: {m.error_line()}")
                return None
            peaks.append(m.peak_rss_bytes)
            walls.append(m.wall_s)
        peaks.sort()
        walls.sort()
        result = (peaks[len(peaks) // 2], walls[len(walls) // 2])
        self._baselines[key] = result
        return result

    # -- scenarios --

    def memory_refusal(self, mode: str, size: int) -> str | None:
        """Refuse a modelled run that could push the machine out of memory."""
        if mode != commands.MODELLED:
            return None
        need = int(self.memory_margin * size) + 256 * MiB
        avail = meminfo("MemAvailable")
        if avail is not None and avail < need:
            return (f"skipped: the modelled byte[] path on {format_bytes(size)} needs about {format_bytes(need)}, "
                    f"only {format_bytes(avail)} available")
        return None

    def persist(self, state: dict, size_label: str, mode: str, gzip: str, variant: str | None = None) -> Outcome:
        command = commands.COMMANDS[("persist", mode)].name
        refusal = self.memory_refusal(mode, state["bytes"])
        if refusal:
            return Outcome(None, None, False, refusal, command)
        projector = self.projector(size_label, mode, gzip)
        extra, extra_env = variant_args(variant)
        if variant:
            projector += "-" + "".join(ch if ch.isalnum() else "_" for ch in variant)
            command += " " + " ".join(extra or [f"{k}={v}" for k, v in extra_env.items()])
        argv = self.persist_argv(projector, state["path"], mode, gzip, heap=self.heap) + extra
        m = self.run(argv, gzip, state["bytes"], extra_env)
        return self._outcome(m, command)

    def read_back(self, op: str, state: dict, size_label: str, mode: str, gzip: str, persisted: bool) -> Outcome:
        """A restore (output compared with the input) or an anatomy (every byte counted) of the snapshot
        this mode's persist wrote; when it did not run, a streaming persist (not measured) writes one."""
        projector = self.projector(size_label, mode, gzip)
        command = commands.COMMANDS[(op, mode)].name
        if not persisted:
            m = self.run(self.persist_argv(projector, state["path"], "streaming", gzip), gzip, state["bytes"])
            if not m.ok:
                return Outcome(None, None, False, f"set-up persist failed: {m.error_line()}", command)
        refusal = self.memory_refusal(mode, state["bytes"])
        if refusal:
            return Outcome(None, None, False, refusal, command)
        out = os.path.join(self.run_dir, f"{op}-{size_label}-{mode}-{gzip}.json")
        try:
            m = self.run(self.scenario_argv(op, mode, projector, out, heap=self.heap), gzip, state["bytes"])
            outcome = self._outcome(m, command)
            if outcome.ok:
                error = (self._check_anatomy(outcome.summary, state) if op == "anatomy"
                         else self._check_output(out, state))
                outcome = dataclasses.replace(outcome, ok=error is None, error=error, verified=error is None)
            return outcome
        finally:
            try:
                os.unlink(out)
            except FileNotFoundError:
                pass

    def _outcome(self, m: Measured, command: str) -> Outcome:
        summary = m.json()
        if not m.ok or summary is None:
            return Outcome(m, summary, False, m.error_line() if not m.ok else "no JSON summary", command)
        if "totalBytes" in summary:  # an anatomy report: its own seconds, where the payload was
            source = summary.get("source") or {}
            summary = {"total_ms": (summary.get("seconds") or 0) * 1000.0, "anatomy_total_bytes": summary["totalBytes"],
                       "payload_location": source.get("payload_location"),
                       "envelope_location": source.get("envelope_location")}
        return Outcome(m, summary, True, None, command)

    @staticmethod
    def _check_output(out: str, state: dict) -> str | None:
        try:
            n, sha = file_digest(out)
        except FileNotFoundError:
            return "restore reported success but wrote no output file"
        if n != state["bytes"] or sha != state["sha256"]:
            return (f"restored output differs from the input: {n} bytes sha256 {sha[:16]}..., "
                    f"expected {state['bytes']} bytes sha256 {state['sha256'][:16]}...")
        return None

    @staticmethod
    def _check_anatomy(summary: dict | None, state: dict) -> str | None:
        counted = (summary or {}).get("anatomy_total_bytes")
        if counted != state["bytes"]:
            return f"anatomy counted {counted} bytes, the state has {state['bytes']}"
        return None

    def row(self, op: str, mode: str, state: dict, size_label: str, gzip: str, outcome: Outcome,
            variant: str | None = None) -> dict:
        row = empty_row()
        modelled = mode == commands.MODELLED
        row.update(op=op, mode=mode, variant=variant or "", backend=self.backend, size_label=size_label,
                   size_bytes=state["bytes"],
                   gzip_backend=gzip, ok=outcome.ok, error=outcome.error, command=outcome.command,
                   repeat=self.repeat, run_id=self.run_id, verified=outcome.verified, modelled=modelled)
        m, s = outcome.measured, outcome.summary or {}
        if m is not None:
            row["peak_rss_bytes"] = m.peak_rss_bytes
            row["wall_s"] = round(m.wall_s, 3)
            row["cpu_s"] = round(m.user_s + m.sys_s, 3)
        row["threads"] = s.get("threads")
        row["json_check"] = s.get("json_check")
        row["payload_location"] = s.get("payload_location")
        row["envelope_location"] = s.get("envelope_location")
        row["compressed_bytes"] = s.get("compressed_size_bytes")
        row["child_peak_rss_bytes"] = s.get("peak_rss_bytes")
        row["peak_heap_bytes"] = s.get("peak_heap_bytes")
        if s.get("total_ms"):
            row["op_s"] = round(s["total_ms"] / 1000.0, 4)
        if m is not None and outcome.ok:
            base = self.baseline(op, mode, gzip, s.get("payload_location"))
            if base is not None:
                row["baseline_rss_bytes"], bwall = base
                row["baseline_wall_s"] = round(bwall, 3)
                row["overhead_bytes"] = m.peak_rss_bytes - base[0]
                row["overhead_ratio"] = round(row["overhead_bytes"] / state["bytes"], 4)
            self._speed(row, op, mode, state, gzip, m, variant)
        if modelled:
            row.update({c: None for c in TIME_COLUMNS})
        return row

    def _speed(self, row: dict, op: str, mode: str, state: dict, gzip: str, m: Measured,
               variant: str | None = None) -> None:
        seconds = row["op_s"] or (m.wall_s - (row["baseline_wall_s"] or 0.0))
        if seconds and seconds > 0:
            row["throughput_mib_s"] = round(state["bytes"] / MiB / seconds, 1)
        direction = DIRECTION[op]
        codec = self.codec.mb_s(state, gzip, direction)
        zlib_codec = self.codec.mb_s(state, "zlib", direction)
        if codec:
            row["codec_mib_s"] = round(codec, 1)
            if row["throughput_mib_s"]:
                row["ratio_to_codec"] = round(row["throughput_mib_s"] / codec, 3)
            key = (state["path"], gzip, mode, op) + ((variant,) if variant else ())
            row["paired_ratio_to_codec"] = self.codec.paired_ratio(state, gzip, direction,
                                                                   self.scenario_rounds.get(key, {}))
            # the whole process (interpreter start-up, imports, spool, hashing, upload, row) against
            # the codec loop alone
            if m.wall_s > 0:
                row["process_ratio_to_codec"] = round(state["bytes"] / MiB / m.wall_s / codec, 3)
            row["paired_process_ratio_to_codec"] = self.codec.paired_ratio(state, gzip, direction,
                                                                           self.scenario_walls.get(key, {}))
        if zlib_codec:
            row["codec_zlib_mib_s"] = round(zlib_codec, 1)
            if row["throughput_mib_s"]:
                row["ratio_to_zlib_codec"] = round(row["throughput_mib_s"] / zlib_codec, 3)


def best_of(best: Outcome | None, new: Outcome) -> Outcome:
    """Best of repeats: the fastest run, but the highest peak seen (memory is a worst case)."""
    if best is None or not new.ok:
        return new
    if not best.ok:
        return best
    fast = new if new.seconds < best.seconds else best
    slow = best if fast is new else new
    if slow.measurement.peak_rss_bytes > fast.measurement.peak_rss_bytes:
        fast = dataclasses.replace(fast, measured=dataclasses.replace(
            fast.measurement, peak_rss_bytes=slow.measurement.peak_rss_bytes))
    return fast
