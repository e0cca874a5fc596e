"""An ipywidgets console for a guarded migration (notebook 02).

Shows the target service and the plan size; nothing can run until the operator types the
target service id into the confirmation box. Buttons: run the canary, run everything
(``--continue``), pause/resume, stop (between rows; the journal lets a later run resume). A
progress bar and live done/skipped/failed counts follow the run, which happens in a
background thread so the buttons stay live. ipywidgets is imported only when a console is made.
"""

from __future__ import annotations

import dataclasses
import html
import threading

from ..ops.migrate.guards import Controls
from ..ops.migrate.runner import RunOptions, RunResult, run_plan


class MigrationConsole:
    def __init__(self, plan, ep, options: RunOptions | None = None):
        import ipywidgets as w

        self.plan, self.ep = plan, ep
        self.options = options or RunOptions()
        self.controls = Controls(self.options.pause_file, self.options.stop_file)
        self.result: RunResult | None = None
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self.target = plan.target_service_id
        n = len(plan.items)
        self.title = w.HTML(f"<b>{html.escape(plan.kind)}</b> on service <code>{html.escape(self.target)}</code>"
                            f" at <code>{html.escape(str((plan.where.get('target') or plan.where)['state']))}</code>"
                            f": {n} item(s) planned")
        self.confirm = w.Text(placeholder=f"type {self.target} to confirm", description="Confirm:")
        self.canary = w.BoundedIntText(value=self.options.canary, min=0, max=max(n, 0) or 0, description="Canary:")
        self.run_canary = w.Button(description="Run canary", button_style="warning", disabled=True)
        self.run_all = w.Button(description="Run all", button_style="danger", disabled=True)
        self.pause = w.ToggleButton(description="Pause", disabled=True)
        self.stop = w.Button(description="Stop", disabled=True)
        self.bar = w.IntProgress(value=0, min=0, max=max(n, 1), description="Progress:")
        self.counts = w.HTML(self._counts_html({"done": 0, "skipped": 0, "failed": 0}))
        self.status = w.HTML("")
        self.confirm.observe(self._on_confirm, names="value")
        self.run_canary.on_click(lambda _: self._start(proceed=False))
        self.run_all.on_click(lambda _: self._start(proceed=True))
        self.pause.observe(self._on_pause, names="value")
        self.stop.on_click(lambda _: self.controls.stop())
        if plan.refused:
            self.status.value = f"<b>refused:</b> {html.escape(plan.refused)}"
            self.confirm.disabled = True
        self.widget = w.VBox([self.title, w.HBox([self.confirm, self.canary]),
                              w.HBox([self.run_canary, self.run_all, self.pause, self.stop]),
                              self.bar, self.counts, self.status])

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    # --- events --------------------------------------------------------------------------------

    @property
    def confirmed(self) -> bool:
        return self.confirm.value.strip() == self.target and not self.plan.refused

    def _on_confirm(self, _change) -> None:
        idle = self._thread is None or not self._thread.is_alive()
        self.run_canary.disabled = self.run_all.disabled = not (self.confirmed and idle)

    def _on_pause(self, change) -> None:
        if change["new"]:
            self.controls.pause()
            self.pause.description = "Resume"
        else:
            self.controls.resume()
            self.pause.description = "Pause"

    def _start(self, proceed: bool) -> None:
        if not self.confirmed or (self._thread is not None and self._thread.is_alive()):
            return
        opts = dataclasses.replace(self.options, execute=True, proceed=proceed, canary=int(self.canary.value))
        self.controls = Controls(opts.pause_file, opts.stop_file)
        self.run_canary.disabled = self.run_all.disabled = True
        self.pause.disabled = self.stop.disabled = False
        self.bar.value = 0
        self.status.value = "running..."
        self._thread = threading.Thread(target=self._run, args=(opts,), name="sekiops-migration", daemon=True)
        self._thread.start()

    def _run(self, opts: RunOptions) -> None:
        try:
            self.result = run_plan(self.plan, self.ep, opts, controls=self.controls, progress=self._progress)
            self.status.value = (f"<b>{html.escape(self.result.status)}</b>: {html.escape(self.result.message)}"
                                 f"<br>audit record: <code>{html.escape(self.result.audit or '')}</code>")
        except BaseException as exc:  # shown, not lost in a thread
            self.error = exc
            self.status.value = f"<b>error:</b> {html.escape(str(exc))}"
        finally:
            self.pause.disabled = self.stop.disabled = True
            self._on_confirm(None)

    def _progress(self, ev: dict) -> None:
        c = ev["counts"]
        self.bar.max = max(1, ev["total"])
        self.bar.value = min(self.bar.max, c["done"] + c["skipped"] + c["failed"] + c.get("already", 0))
        self.counts.value = self._counts_html(c)
        if ev["event"] == "paused":
            self.status.value = "paused"
        elif ev["event"] == "backoff":
            self.status.value = f"store unavailable; retrying in {ev['seconds']} s"
        elif ev["event"] == "item":
            self.status.value = "running..."

    @staticmethod
    def _counts_html(c: dict) -> str:
        return (f"done <b>{c.get('done', 0)}</b> &nbsp; skipped <b>{c.get('skipped', 0)}</b> &nbsp; "
                f"failed <b>{c.get('failed', 0)}</b>")

    def wait(self, timeout: float | None = None) -> RunResult | None:
        """Block until the current run ends (scripts and tests)."""
        if self._thread is not None:
            self._thread.join(timeout)
        if self.error is not None:
            raise self.error
        return self.result
