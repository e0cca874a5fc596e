"""An ipywidgets console for a guarded migration (notebook 02), and the notebook's wording.

Shows the target service and the plan size; nothing can run until the operator types the target
service id into the confirmation box, and a plan with nothing to do keeps the console locked and
says so. Buttons: *Run canary* (migrate and verify the first rows, then stop for a check), *Run
all* (go on past the canary), *Pause*/*Resume* and *Stop* (between rows; the journal lets a later
run resume). A progress bar, live done/skipped/failed counts and the audit record's path follow the
run, which happens in a background thread so the buttons stay live.

Journals, their backups and audit records go to the operations folder (:mod:`sekiops.home`), never
next to the notebook. Messages name notebook parameters and buttons, not CLI flags
(:func:`notebook_wording`). ipywidgets is imported only when a console is made.
"""

from __future__ import annotations

import contextlib
import dataclasses
import html
import re
import threading

from ..errors import SekiopsError
from ..home import migration_journal
from ..ops.migrate.guards import Controls
from ..ops.migrate.runner import RunOptions, RunResult, run_plan
from ..units import format_bytes

#: CLI flags in library messages -> what a notebook user sets or presses instead
_WORDING = [
    (r"pass --execute to migrate", "set execute=True (with confirm_service) or use the console to migrate"),
    (r"rerun with --continue", "press Run all (or set proceed=True)"),
    (r"pass --continue to", "press Run all (or set proceed=True) to"),
    (r"--continue", "Run all (proceed=True)"),
    (r"--execute", "execute=True"),
    (r"another --journal", "another journal"),
    (r"--journal(?: FILE)?", "the journal parameter"),
    (r"--threshold(?: BYTES)?", "the threshold parameter"),
    (r"--payload-level", "payload_level=True"),
    (r"--state URL", "state_url"), (r"--blob URL", "blob_url"),
    (r"--to-state", "to_state"), (r"--to-blob", "to_blob"), (r"--to-service-id", "to_service_id"),
    (r"--services a,b,\.\.\.", "services=[...]"), (r"--services", "services"),
    (r"--grace", "grace_hours"), (r"--stop-file", "the Stop button (or stop_file)"),
    (r"--pause-file", "the Pause button (or pause_file)"), (r"--rate", "rate"),
]


def notebook_wording(text: str) -> str:
    """``text`` with CLI flags replaced by the notebook parameters and buttons that do the same."""
    for pattern, repl in _WORDING:
        text = re.sub(pattern, repl, text)
    return text


@contextlib.contextmanager
def notebook_errors():
    """Re-raise a SekiopsError with :func:`notebook_wording` applied to its message (same type)."""
    try:
        yield
    except SekiopsError as exc:
        worded = notebook_wording(str(exc))
        if worded == str(exc):
            raise
        try:
            new = type(exc)(worded)
        except Exception:  # noqa: BLE001 - an error type with another signature: keep the original
            raise exc from None
        raise new from None


def plan_summary(plan) -> str:
    """The plan's summary lines in the notebook's words (sizes in binary units)."""
    lines = []
    for line in plan.summary_lines():
        line = re.sub(r"(\d{1,3}(?:,\d{3})+|\d{4,}) bytes", lambda m: format_bytes(int(m.group(1).replace(",", ""))),
                      line)
        line = re.sub(r"(bytes read|uploaded to blobs|written into rows|in the row store|blob bytes deleted): "
                      r"(\d{1,3}(?:,\d{3})+|\d+)\b",
                      lambda m: f"{m.group(1)}: {format_bytes(int(m.group(2).replace(',', '')))}", line)
        lines.append(notebook_wording(line))
    if not plan.items and not plan.refused:
        lines.append("nothing to migrate: no row needs this change (the console stays locked)")
    return "\n".join(lines)


def counts_text(counts: dict) -> str:
    parts = [f"done {counts.get('done', 0):,}", f"skipped {counts.get('skipped', 0):,}",
             f"failed {counts.get('failed', 0):,}"]
    if counts.get("already"):
        parts.append(f"done in earlier runs {counts['already']:,}")
    if counts.get("reverted"):
        parts.append(f"reverted {counts['reverted']:,}")
    return ", ".join(parts)


def result_message(result: RunResult, plan) -> str:
    """What a run did, in the notebook's words (buttons and parameters, not CLI flags)."""
    c, n = result.counts, len(plan.items)
    left = max(0, n - c.get("done", 0) - c.get("already", 0) - c.get("skipped", 0) - c.get("failed", 0))
    if result.status == "dry-run":
        return (f"dry run: nothing was written. To migrate the {n:,} planned item(s) of service "
                f"{plan.target_service_id}: type the service id in the console and press Run canary, or "
                f"run headless with execute=True and confirm_service={plan.target_service_id!r}")
    if result.status == "canary":
        if not c.get("done"):
            return (f"the canary passed in an earlier run: press Run all (or set proceed=True) to migrate the "
                    f"remaining {left:,} item(s)")
        return (f"canary passed: {c['done']:,} item(s) migrated and verified; check them, then press Run all "
                f"(or set proceed=True) for the remaining {left:,}")
    if result.status == "stopped":
        return f"stopped between items ({counts_text(c)}); press Run all to resume from the journal"
    if result.status == "complete":
        return f"complete: {counts_text(c)}"
    return f"{result.status}: {notebook_wording(result.message)} ({counts_text(c)})"


def default_options(plan, options: RunOptions | None = None) -> RunOptions:
    """``options`` with the journal in the operations folder unless one was given."""
    options = options or RunOptions()
    if not options.journal:
        options = dataclasses.replace(options, journal=migration_journal(plan))
    return options


def run_in_notebook(plan, ep, options: RunOptions | None = None, **kw) -> RunResult:
    """:func:`~sekiops.ops.migrate.runner.run_plan` with the notebook's journal default and wording."""
    with notebook_errors():
        return run_plan(plan, ep, default_options(plan, options), **kw)


class MigrationConsole:
    def __init__(self, plan, ep, options: RunOptions | None = None):
        import ipywidgets as w

        self.plan, self.ep = plan, ep
        self.options = default_options(plan, options)
        assert self.options.journal is not None  # default_options names one
        self.controls = Controls(self.options.pause_file, self.options.stop_file)
        self.result: RunResult | None = None
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._running = False
        self._finished = False
        self.target = plan.target_service_id
        n = len(plan.items)
        self.nothing_to_do = n == 0
        self.title = w.HTML(f"<b>{html.escape(plan.kind)}</b> on service <code>{html.escape(self.target)}</code>"
                            f" at <code>{html.escape(str((plan.where.get('target') or plan.where)['state']))}</code>"
                            f": {n:,} item(s) planned")
        self.confirm = w.Text(placeholder=f"type {self.target} to confirm", description="Confirm:")
        self.canary = w.BoundedIntText(value=min(self.options.canary, n), min=0, max=max(n, 0),
                                       description="Canary:")
        self.run_canary = w.Button(description="Run canary", button_style="warning", disabled=True)
        self.run_all = w.Button(description="Run all", button_style="danger", disabled=True)
        self.pause = w.ToggleButton(description="Pause", disabled=True)
        self.stop = w.Button(description="Stop", disabled=True)
        self.bar = w.IntProgress(value=0, min=0, max=max(n, 1), description="Progress:")
        self.counts = w.HTML(self._counts_html({"done": 0, "skipped": 0, "failed": 0}))
        self.status = w.HTML("")
        self.journal = w.HTML(f"journal: <code>{html.escape(self.options.journal)}</code>")
        self.confirm.observe(self._on_confirm, names="value")
        self.run_canary.on_click(lambda _: self._start(proceed=False))
        self.run_all.on_click(lambda _: self._start(proceed=True))
        self.pause.observe(self._on_pause, names="value")
        self.stop.on_click(lambda _: self._stop())
        if plan.refused:
            self.status.value = f"<b>refused:</b> {html.escape(notebook_wording(plan.refused))}"
            self.confirm.disabled = True
        elif self.nothing_to_do:
            self.status.value = ("<b>nothing to migrate</b>: the plan has no item, so the console stays locked "
                                 "(nothing will be written)")
            self.confirm.disabled = self.canary.disabled = True
        self.widget = w.VBox([self.title, w.HBox([self.confirm, self.canary]),
                              w.HBox([self.run_canary, self.run_all, self.pause, self.stop]),
                              self.bar, self.counts, self.status, self.journal])

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    # --- state ---------------------------------------------------------------------------------

    @property
    def confirmed(self) -> bool:
        return (self.confirm.value.strip() == self.target and not self.plan.refused and not self.nothing_to_do)

    def _update_buttons(self) -> None:
        idle = not self._running
        runnable = self.confirmed and idle and not self._finished
        self.run_canary.disabled = self.run_all.disabled = not runnable
        self.pause.disabled = self.stop.disabled = idle

    def _on_confirm(self, _change) -> None:
        self._update_buttons()

    def _on_pause(self, change) -> None:
        if change["new"]:
            self.controls.pause()
            self.pause.description = "Resume"
            self.status.value = "pausing after the current item..."
        else:
            self.controls.resume()
            self.pause.description = "Pause"
            if self._running:
                self.status.value = "running..."

    def _stop(self) -> None:
        self.controls.stop()
        if self.pause.value:  # a paused run must wake up to see the stop
            self.pause.value = False
        self.status.value = "stopping after the current item..."

    def _start(self, proceed: bool) -> None:
        if not self.confirmed or self._running or self._finished:
            return
        opts = dataclasses.replace(self.options, execute=True, proceed=proceed, canary=int(self.canary.value))
        self.controls = Controls(opts.pause_file, opts.stop_file)
        self._running = True
        self.pause.value = False
        self._update_buttons()
        self.bar.value = 0
        self.status.value = "running..."
        self._thread = threading.Thread(target=self._run, args=(opts,), name="sekiops-migration", daemon=True)
        self._thread.start()

    def _run(self, opts: RunOptions) -> None:
        status = ""
        try:
            with notebook_errors():
                self.result = run_plan(self.plan, self.ep, opts, controls=self.controls, progress=self._progress)
            self._finished = self.result.status == "complete"
            self.counts.value = self._counts_html(self.result.counts)
            message = result_message(self.result, self.plan)
            head, _, rest = message.partition(": ")
            if head != self.result.status:
                head, rest = self.result.status, message
            status = (f"<b>{html.escape(head)}</b>: {html.escape(rest)}"
                      f"<br>audit record: <code>{html.escape(self.result.audit or '')}</code>")
        except BaseException as exc:  # shown, not lost in a thread
            self.error = exc
            status = f"<b>error:</b> {html.escape(str(exc))}"
        finally:
            # this thread is still alive here: the flag, not Thread.is_alive(), says the console is idle;
            # the buttons change before the status does, so whoever reads "canary passed" can press Run all
            self._running = False
            self._update_buttons()
            self.status.value = status

    def _progress(self, ev: dict) -> None:
        c = ev["counts"]
        self.bar.max = max(1, ev["total"])
        self.bar.value = min(self.bar.max, c["done"] + c["skipped"] + c["failed"] + c.get("already", 0))
        self.counts.value = self._counts_html(c)
        if ev["event"] == "paused":
            self.status.value = "paused: press Resume to go on, or Stop"
        elif ev["event"] == "backoff":
            self.status.value = f"store unavailable; retrying in {ev['seconds']} s"
        elif ev["event"] == "item" and not self.pause.value:
            self.status.value = "running..."

    @staticmethod
    def _counts_html(c: dict) -> str:
        text = (f"done <b>{c.get('done', 0):,}</b> &nbsp; skipped <b>{c.get('skipped', 0):,}</b> &nbsp; "
                f"failed <b>{c.get('failed', 0):,}</b>")
        if c.get("already"):
            text += f" &nbsp; done in earlier runs <b>{c['already']:,}</b>"
        return text

    def wait(self, timeout: float | None = None) -> RunResult | None:
        """Block until the current run ends (scripts and tests)."""
        if self._thread is not None:
            self._thread.join(timeout)
        if self.error is not None:
            raise self.error
        return self.result
