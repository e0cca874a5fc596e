"""Tables for notebooks and HTML reports: one number format, no ``NaN``/``None``/``<NA>`` cells,
and a frame that scrolls instead of being cut off.

Columns are formatted by name: ``...Bytes``/``..._bytes`` as sizes in binary units with the unit
named (:func:`sekiops.units.format_bytes`), ``...Ratio``/``..._ratio`` as percentages, other
numbers with thousands separators, booleans as yes/no, missing values as ``–``.
"""

from __future__ import annotations

import html
import math

from ..units import format_bytes, format_count, format_duration

MISSING = "–"


def _missing(v) -> bool:
    if v is None:
        return True
    try:
        import pandas as pd

        if v is pd.NA or v is pd.NaT:
            return True
    except ImportError:  # pragma: no cover
        pass
    return isinstance(v, float) and math.isnan(v)


def kind_of(name: str) -> str:
    n = str(name)
    low = n.lower().strip(" )")
    if low.endswith("bytes") or low in ("bytes", "size", "state size"):
        return "bytes"
    if "ratio" in low or low.endswith("percent") or low.endswith("share"):
        return "ratio"
    if low.endswith("_ms") or low.endswith("ms") and low[:-2].endswith(("build", "upload", "persist", "read",
                                                                         "decode", "total")):
        return "ms"
    return "number"


def format_value(v, kind: str = "number") -> str:
    if _missing(v):
        return MISSING
    if isinstance(v, bool) or type(v).__name__ == "bool_":
        return "yes" if v else "no"
    if isinstance(v, str):
        return v
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if kind == "bytes":
        return format_bytes(f)
    if kind == "ratio":
        return f"{f:.1%}" if abs(f) <= 1.5 else f"{f:.1f} %"
    if kind == "ms":
        return format_duration(f / 1000.0)
    return format_count(f)


def format_frame(df, kinds: dict | None = None):
    """A copy of ``df`` with every cell a display string (see the module docstring)."""
    import pandas as pd

    kinds = kinds or {}
    out = pd.DataFrame(index=df.index)
    for col in df.columns:
        k = kinds.get(col) or kind_of(col)
        out[col] = [format_value(v, k) for v in df[col].tolist()]
    return out


def table_html(df, caption: str | None = None, max_height: str = "480px", index: bool = False,
               kinds: dict | None = None) -> str:
    """HTML for ``df`` (formatted) in a frame that scrolls both ways."""
    body = format_frame(df, kinds).to_html(index=index, border=0, escape=True)
    cap = f'<p style="margin:0.3em 0;font-size:90%"><i>{html.escape(caption)}</i></p>' if caption else ""
    return (f'{cap}<div class="sekiops-table" style="max-width:100%;max-height:{max_height};overflow:auto">'
            f"{body}</div>")


def table_text(df, caption: str | None = None, index: bool = False, kinds: dict | None = None,
               max_rows: int = 60) -> str:
    """Plain text for ``df`` (formatted, at most ``max_rows`` rows): what a headless run's output
    keeps for readers of the .ipynb or a text conversion, where HTML is not rendered."""
    frame = format_frame(df, kinds)
    body = frame.to_string(index=index, max_rows=max_rows) if len(frame.columns) else "(no columns)"
    return f"{caption}\n{body}" if caption else body


def show_table(df, caption: str | None = None, **kw) -> None:
    """Display ``df`` formatted, in a scrolling frame, with a plain-text twin (displays; returns nothing)."""
    from IPython.display import display

    text_kw = {k: v for k, v in kw.items() if k in ("index", "kinds")}
    display({"text/html": table_html(df, caption, **kw), "text/plain": table_text(df, caption, **text_kw)}, raw=True)


def numbers_frame(numbers: dict):
    """A ``{name: value}`` dict as a two-column frame of display strings, each formatted by its name."""
    import pandas as pd

    return pd.DataFrame({"what": list(numbers), "value": [format_value(v, kind_of(k)) for k, v in numbers.items()]})


def show_numbers(numbers: dict, caption: str | None = None) -> None:
    show_table(numbers_frame(numbers), caption)
