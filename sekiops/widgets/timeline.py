"""The interactive timeline of notebook 04: a projector picker and a time-window slider that redraw
the incident timeline chart (ipywidgets).

``timeline_explorer(rep)`` displays it and returns nothing. Whether widgets are shown is
:func:`sekiops.widgets.frontend.display_mode` (the kernel's comm state, never a process command
line): without a widget frontend the full-window chart above it stands, and one line says so.
"""

from __future__ import annotations

import dataclasses

from ..ops.incident.charts import timeline_chart
from .frontend import PLAIN, display_mode, show
from .panes import chart_pane, set_chart

FALLBACK = ("(interactive timeline: open this notebook in JupyterLab to zoom and filter; the full window is shown "
            "above)")


def window_choices(rep) -> list:
    """(label, time) pairs, one per minute of the timeline."""
    tl = rep.timeline
    times = sorted(tl["time"].dt.floor("min").unique()) if len(tl) else []
    return [(t.strftime("%H:%M"), t) for t in times]


def build_timeline_widget(rep):
    """The widget (a VBox; not displayed), or None when the timeline has fewer than two minutes."""
    import ipywidgets as W

    choices = window_choices(rep)
    if len(choices) < 2:
        return None
    tl = rep.timeline
    # redraw once the handle is released, not at every minute it passes (each redraw renders a chart)
    rng = W.SelectionRangeSlider(options=choices, index=(0, len(choices) - 1), description="window",
                                 continuous_update=False, layout=W.Layout(width="90%"))
    names = ["(all)"] + sorted(tl["projectorName"].dropna().unique())
    pick = W.Dropdown(options=names, value="(all)", description="projector")
    caption = W.HTML()
    chart = chart_pane("sekiops-timeline-chart")

    def redraw(*_):
        sub = dataclasses.replace(rep)
        if pick.value != "(all)":
            sub.timeline = tl[(tl["source"] == "metrics") | (tl["projectorName"] == pick.value)]
        t0, t1 = rng.value
        events = sub.timeline[(sub.timeline["source"] == "logs") & (sub.timeline["time"] >= t0)
                              & (sub.timeline["time"] <= t1 + _minute())]
        caption.value = (f"{t0.strftime('%H:%M')}–{t1.strftime('%H:%M')} UTC, "
                         f"{'all projectors' if pick.value == '(all)' else pick.value}: {len(events):,} events")
        set_chart(chart, timeline_chart(sub, time_from=t0, time_to=t1 + _minute()))

    rng.observe(redraw, names="value")
    pick.observe(redraw, names="value")
    redraw()
    return W.VBox([W.HBox([pick, caption]), rng, chart])


def _minute():
    import pandas as pd

    return pd.Timedelta("59s")


def timeline_explorer(rep, mode: str = "auto") -> None:
    """Display the interactive timeline (widgets), or one line saying where it is (headless)."""
    how = display_mode(mode)
    if how == PLAIN:
        print(FALLBACK)
        return
    box = build_timeline_widget(rep)
    if box is None:
        print("(not enough data for the interactive timeline)")
        return
    show(box, FALLBACK, mode=how)
