"""Run notebooks headless (papermill) and export them as HTML without code cells (nbconvert).

The notebooks stay thin: they call the library; this module only executes and renders them,
for ``sekiops report incident`` and ``sekiops demo``.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from ..errors import SekiopsError, UsageError


def notebooks_dir() -> Path:
    """``$SEKIOPS_NOTEBOOKS``, else the ``notebooks/`` folder of this checkout."""
    env = os.environ.get("SEKIOPS_NOTEBOOKS")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "notebooks"
    if not path.is_dir():
        raise UsageError(f"notebooks folder {str(path)!r} not found; set SEKIOPS_NOTEBOOKS")
    return path


def notebook(name: str) -> Path:
    path = notebooks_dir() / name
    if not path.is_file():
        raise UsageError(f"notebook {str(path)!r} not found")
    return path


def run_notebook(name: str, parameters: dict, out_ipynb: str, kernel: str = "python3",
                 cwd: str | None = None, timeout: int = 1800) -> str:
    """Execute a notebook with papermill; a failing cell raises SekiopsError naming the notebook."""
    import papermill

    previous = os.environ.get("SEKIOPS_WIDGETS")
    os.environ["SEKIOPS_WIDGETS"] = "0"  # no frontend will ever render widgets here: plain output
    config, sockets = _local_kernel_config()
    try:
        papermill.execute_notebook(str(notebook(name)), out_ipynb, parameters=parameters, kernel_name=kernel,
                                   cwd=cwd, progress_bar=False, log_output=False, execution_timeout=timeout,
                                   **({"config": config} if config is not None else {}))
    except papermill.PapermillExecutionError as exc:
        raise SekiopsError(f"notebook {name} failed in cell {exc.exec_count}: {exc.ename}: "
                           f"{str(exc.evalue)[:300]} (executed copy: {out_ipynb})") from None
    finally:
        if sockets is not None:
            shutil.rmtree(sockets, ignore_errors=True)
        if previous is None:
            os.environ.pop("SEKIOPS_WIDGETS", None)
        else:
            os.environ["SEKIOPS_WIDGETS"] = previous
    return out_ipynb


def _local_kernel_config():
    """Talk to the kernel over Unix sockets in a private directory, not unencrypted TCP on localhost:
    no other local user can connect, and the kernel has nothing to warn about on stderr.
    Returns ``(traitlets Config, socket dir)``, or ``(None, None)`` (TCP) where sockets cannot be used."""
    if sys.platform == "win32":
        return None, None
    from traitlets.config import Config

    sockets = tempfile.mkdtemp(prefix="sekiops-kernel-")  # 0700
    if len(sockets) > 80:  # a Unix socket path holds ~107 bytes, and the kernel appends "-<port>"
        os.rmdir(sockets)
        return None, None
    config = Config()
    config.KernelManager.transport = "ipc"
    config.KernelManager.ip = os.path.join(sockets, "kernel")
    return config, sockets


def notebook_title(nb) -> str | None:
    """The first Markdown heading of a notebook (``# 01 · Inventory and offload`` -> its text)."""
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        for line in cell.source.splitlines():
            if line.startswith("#"):
                title = line.lstrip("#").strip()
                if title:
                    return title
    return None


def export_html(ipynb_path: str, html_path: str, include_code: bool = False, title: str | None = None) -> str:
    """Render an executed notebook to a standalone HTML file (code cells hidden by default), titled
    ``title`` or the notebook's first heading (never nbconvert's "Notebook")."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(ipynb_path, as_version=4)
    exporter = HTMLExporter()
    exporter.exclude_input = not include_code
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    name = title or notebook_title(nb) or Path(ipynb_path).stem
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": name}})
    with open(html_path, "w", encoding="utf-8") as f:
        f.write(body)
    return html_path


def render(name: str, parameters: dict, out_dir: str, stem: str | None = None,
           include_code: bool = False) -> tuple[str, str]:
    """Run ``name`` with ``parameters`` and write ``{stem}.ipynb`` and ``{stem}.html`` in ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    stem = stem or Path(name).stem
    ipynb = run_notebook(name, parameters, os.path.join(out_dir, stem + ".ipynb"), cwd=out_dir)
    return ipynb, export_html(ipynb, os.path.join(out_dir, stem + ".html"), include_code)


class kernel_stderr:
    """Send the stderr a notebook kernel inherits (start-up warnings) to a file, not the terminal."""

    def __init__(self, path: str):
        self.path = path

    def __enter__(self):
        sys.stderr.flush()
        self.saved = os.dup(2)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(self.fd, 2)
        return self

    def __exit__(self, *exc):
        sys.stderr.flush()
        os.dup2(self.saved, 2)
        os.close(self.saved)
        os.close(self.fd)
