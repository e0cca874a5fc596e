"""A real JupyterLab, started and stopped by the test, driven by Playwright in Debian's Chromium.

The browser comes from apt (``/usr/bin/chromium``, installed by scripts/bootstrap), never from
Playwright's own download: Playwright is launched with ``executable_path``. JupyterLab runs as a
child process in its own process group, on a free loopback port with a random token, with private
Jupyter config/data/runtime/settings folders (the user's are never touched), and is stopped by
its process-group id at the end.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
CHROMIUM = "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else shutil.which("chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
#: where screenshots go (a CI artifact; README names it); SEKIOPS_SCREENSHOTS overrides
SCREENSHOTS = Path(os.environ.get("SEKIOPS_SCREENSHOTS") or REPO / "build" / "screenshots")

#: JupyterLab user settings: every cell rendered (no windowing: what the test reads is in the DOM),
#: no news / update checks (no network)
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                         "checkForUpdates": False},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
}


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Lab:
    """``Lab(root, env).start()``; ``.url(path)``; ``.stop()``. ``root`` holds the notebooks."""

    def __init__(self, root: Path, env: dict | None = None):
        self.root = Path(root)
        self.extra_env = dict(env or {})
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.private = Path(tempfile.mkdtemp(prefix="sekiops-lab-private-"))
        self.proc: subprocess.Popen | None = None
        self.log_path = self.private / "lab.log"

    def start(self, timeout: float = 90) -> Lab:
        settings = self.private / "settings"
        for name, value in LAB_SETTINGS.items():
            path = settings / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(value))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "SEKIOPS_WIDGETS"))}
        env.update({"JUPYTER_CONFIG_DIR": str(self.private / "config"), "JUPYTER_DATA_DIR": str(self.private / "data"),
                    "JUPYTER_RUNTIME_DIR": str(self.private / "runtime"), "JUPYTERLAB_SETTINGS_DIR": str(settings),
                    "JUPYTERLAB_WORKSPACES_DIR": str(self.private / "workspaces"),
                    "PYTHONPATH": str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""),
                    "MPLBACKEND": "Agg"})
        env.update(self.extra_env)
        argv = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
                f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.root}",
                "--LabApp.expose_app_in_browser=True", "--ServerApp.open_browser=False",
                "--LabApp.news_url=", "--ServerApp.disable_check_xsrf=False"]
        if os.geteuid() == 0:
            argv.append("--allow-root")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=env, cwd=str(self.private), start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited ({self.proc.returncode}): {self.tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/status?token={self.token}",
                                            timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"jupyter lab did not answer within {timeout} s: {self.tail()}")

    def url(self, path: str = "lab") -> str:
        return f"http://127.0.0.1:{self.port}/{path}?token={self.token}"

    def tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)  # the server and the kernels it started
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
            except ProcessLookupError:
                pass
        if self.proc is not None:
            try:  # kernels that outlived the server
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if getattr(self, "log", None):
            self.log.close()
        shutil.rmtree(self.private, ignore_errors=True)


# --- driving a notebook ----------------------------------------------------------------------------


class Notebook:
    """One open notebook in the browser page."""

    def __init__(self, page, lab: Lab, name: str):
        self.page, self.lab, self.name = page, lab, name

    def open(self, timeout: float = 90_000) -> Notebook:
        self.page.goto(self.lab.url(f"lab/tree/{self.name}"))
        self.page.wait_for_selector(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell", timeout=timeout)
        self.page.wait_for_function("() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
                                    " const k = w && w.sessionContext && w.sessionContext.session &&"
                                    " w.sessionContext.session.kernel; return k && k.status === 'idle'; }",
                                    timeout=timeout)
        # more room for the notebook: the file browser folded away, as an SRE would on a laptop
        self.page.evaluate("() => { const s = window.jupyterapp.shell; if (!s.leftCollapsed) "
                           "window.jupyterapp.commands.execute('application:toggle-left-area'); }")
        return self

    def run_all(self, timeout: float = 300_000) -> None:
        self.page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
        self.page.wait_for_function(
            """() => {
                const w = window.jupyterapp.shell.currentWidget;
                const k = w.sessionContext.session.kernel;
                const prompts = [...document.querySelectorAll(
                    '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputPrompt')];
                return k.status === 'idle' && prompts.length > 0 &&
                       prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
            }""", timeout=timeout, polling=500)

    @property
    def panel(self):
        return self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")

    def errors(self) -> list[str]:
        """Error outputs (tracebacks) and stderr that names an error."""
        out = []
        for t in self.panel.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]') \
                .all_inner_texts():
            if "Error" in t or "Traceback" in t or "Exception" in t:
                out.append(t[:2000])
        return out

    def output_text(self) -> str:
        return "\n".join(self.panel.locator(".jp-OutputArea-output").all_inner_texts()).replace("\xa0", " ")

    def screenshot(self, name: str, locator=None, block: str = "center") -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        if locator is not None:
            locator.evaluate("(e, block) => e.scrollIntoView({block})", block)
            self.page.wait_for_timeout(400)
        self.page.screenshot(path=str(path))
        return path

    def close(self) -> None:
        """Shut the kernel down and close the notebook without saving it (the folder stays as it was)."""
        self.page.evaluate("""async () => {
            const w = window.jupyterapp.shell.currentWidget;
            // page.evaluate has no deadline of its own: give the shutdown 15 s, then close anyway
            await Promise.race([w.sessionContext.shutdown(), new Promise(r => setTimeout(r, 15000))]);
            w.context.model.dirty = false;  // nothing to save: the copy on disk stays as it was
            w.close();
        }""")
        for _ in range(10):
            if self.page.evaluate("() => !document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)')"):
                return
            buttons = self.page.locator(".jp-Dialog button:has-text('Discard'), .jp-Dialog button:has-text('No'), "
                                        ".jp-Dialog button:has-text('Close')")
            if buttons.count():
                buttons.first.click()
            self.page.wait_for_timeout(500)
        # still open (a dialog we do not know): harmless for the next notebook, which opens its own tab


class Checks:
    """Collects what the user would see wrong, so one run reports every problem of a notebook."""

    def __init__(self, name: str):
        self.name, self.problems = name, []

    def __call__(self, ok, message: str) -> bool:
        if not ok:
            self.problems.append(message)
        return bool(ok)

    def done(self) -> None:
        assert not self.problems, f"{self.name}:\n- " + "\n- ".join(self.problems)


def widget_button(scope, text: str):
    return scope.locator(f"button.jupyter-button:has-text('{text}')").first


def dropdown(scope, label: str):
    return scope.locator(f".widget-dropdown:has(label:text-is('{label}')) select").first


def listing(root: Path) -> set[str]:
    """Every file and folder under ``root`` (relative), but JupyterLab's own checkpoints."""
    out = set()
    for p in root.rglob("*"):
        rel = p.relative_to(root).as_posix()
        if rel.split("/")[0] == ".ipynb_checkpoints":
            continue
        out.add(rel)
    return out
