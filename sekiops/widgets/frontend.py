"""Whether a notebook frontend will render ipywidgets, decided from the kernel's comm state.

* ``SEKIOPS_WIDGETS=0`` (papermill runs by ``sekiops report``/``demo`` set it): plain output only;
  ``SEKIOPS_WIDGETS=1``: widgets only.
* No IPython kernel, no comm manager or no ipywidgets: plain output (nothing could render a widget).
* The kernel's ipywidgets *control comm* is open: a widget frontend (JupyterLab, Notebook 7,
  VS Code) connected to this kernel and asked it for its widgets' state: widgets only.
* Otherwise the kernel cannot know yet. A frontend opens that comm when it connects to the kernel,
  usually before ipywidgets is imported, and any answer to a probe sent now would be read only
  after every queued cell ran ("Run all"). So the widget is displayed *with its plain-text
  fallback in the same output*: a frontend that renders widgets shows the widget, papermill,
  nbconvert and text consoles keep the text. Nothing reads process command lines.

:func:`show` displays; nothing here returns what it displayed.
"""

from __future__ import annotations

import os

from ..errors import UsageError

WIDGETS = "widgets"      # a widget frontend is connected: widgets only
PLAIN = "plain"          # no widget can render here: plain output only
BUNDLE = "bundle"        # unknown: the widget with its plain fallback in one output


def _forced() -> str | None:
    v = os.environ.get("SEKIOPS_WIDGETS", "").strip().lower()
    if v in ("0", "false", "no", "off"):
        return PLAIN
    if v in ("1", "true", "yes", "on"):
        return WIDGETS
    return None


def kernel_comm_manager():
    """The running kernel's comm manager, or None outside a kernel (scripts, tests, plain IPython)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    ip = get_ipython()
    kernel = getattr(ip, "kernel", None) if ip is not None else None
    if kernel is None:
        return None
    try:
        import comm

        return comm.get_comm_manager()
    except Exception:  # noqa: BLE001 - no comm package / no manager: no widgets
        return getattr(kernel, "comm_manager", None)


def widget_frontend_connected() -> bool:
    """True when a widget frontend has opened ipywidgets' control comm with this kernel."""
    try:
        from ipywidgets import Widget
    except ImportError:
        return False
    return getattr(Widget, "_control_comm", None) is not None


def display_mode(mode: str = "auto") -> str:
    """``widgets``, ``plain`` or ``bundle`` (see the module docstring); ``mode`` forces one."""
    if mode in (WIDGETS, PLAIN, BUNDLE):
        return mode
    if mode != "auto":
        raise UsageError(f"widget mode {mode!r}: use auto, widgets or plain")
    forced = _forced()
    if forced is not None:
        return forced
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return PLAIN
    if kernel_comm_manager() is None:
        return PLAIN
    return WIDGETS if widget_frontend_connected() else BUNDLE


def has_frontend() -> bool:
    """Whether widgets are displayed at all (``widgets`` or ``bundle`` mode)."""
    return display_mode() != PLAIN


def show(widget=None, fallback: str | None = None, mode: str = "auto") -> None:
    """Display ``widget`` and/or the plain-text ``fallback`` as ``mode`` says; returns nothing."""
    from IPython.display import display

    mode = display_mode(mode)
    if mode == PLAIN or widget is None:
        if fallback is not None:
            print(fallback, end="" if fallback.endswith("\n") else "\n")
        return
    if mode == WIDGETS or fallback is None:
        display(widget)
        return
    bundle = widget._repr_mimebundle_() if hasattr(widget, "_repr_mimebundle_") else {}
    data = dict(bundle[0] if isinstance(bundle, tuple) else bundle or {})
    data["text/plain"] = fallback
    display(data, raw=True)
