"""Panes that show text and charts inside a widget by *state*, never by output capture.

ipywidgets' ``Output`` widget works by capture: while ``with out:`` runs, the kernel's display
messages are routed into the widget by whoever renders it. A headless runner must play the
frontend's part for that, and nbclient (under papermill) does so by sending comm messages on the
shell channel while it waits for the cell's reply there, which intermittently leaves the run
waiting forever (measured: 3 hangs in 5 runs of notebook 04 on a loaded 2-core machine; none in 6
runs without capture; nbclient issue #312). A pane's content is a plain widget value (HTML text,
PNG bytes), synchronised like any other state: nothing to route, nothing to answer.
"""

from __future__ import annotations

import html

from ..ops.charts import png


def text_pane(css_class: str, **layout):
    """An HTML widget that shows preformatted text (:func:`set_text`)."""
    import ipywidgets as W

    pane = W.HTML(layout=W.Layout(**layout) if layout else None)
    pane.add_class(css_class)
    return pane


def set_text(pane, text: str) -> None:
    pane.value = f"<pre style='margin:0;white-space:pre'>{html.escape(text)}</pre>" if text else ""


def chart_pane(css_class: str):
    """An image widget for one PNG chart (:func:`set_chart`)."""
    import ipywidgets as W

    pane = W.Image(format="png", layout=W.Layout(max_width="100%", height="auto"))
    pane.add_class(css_class)
    return pane


def set_chart(pane, fig) -> None:
    """Render a matplotlib figure into the pane (``None`` empties it)."""
    pane.value = b"" if fig is None else png(fig)
