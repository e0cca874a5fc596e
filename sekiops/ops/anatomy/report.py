"""The result of a walk: rows by path, biggest strings, largest arrays; as a dict, frames or a table.

An anatomy shows structure, not data: the biggest strings' values are listed by path, role,
length and offset, and their first characters only with ``show_values=True`` (keys, which are
structure, always).
"""

from __future__ import annotations

import dataclasses

from ...units import format_bytes, format_duration, format_rate
from .tokenizer import T_ARR, T_OBJ, TYPE_NAMES
from .tree import Node, path_of


@dataclasses.dataclass
class Anatomy:
    """Where the bytes are. ``paths`` rows: path, depth, count, bytes, share, keyBytes, overhead,
    types, items (arrays: items over all arrays at the path; objects: members), containers,
    maxItems, maxValueBytes, keysFolded."""

    total_bytes: int
    root_bytes: int
    max_depth: int
    depth: int
    paths: list
    biggest_strings: list
    large_arrays: list
    tokens: int
    seconds: float
    source: dict = dataclasses.field(default_factory=dict)
    #: False: the biggest strings' values carry no prefix (stored data is not shown unless asked)
    values_shown: bool = False

    @property
    def bytes_per_second(self) -> float:
        return round(self.total_bytes / self.seconds) if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {"totalBytes": self.total_bytes, "rootBytes": self.root_bytes,
                "outsideRootBytes": self.total_bytes - self.root_bytes, "maxDepth": self.max_depth,
                "depth": self.depth, "seconds": round(self.seconds, 3), "bytesPerSecond": self.bytes_per_second,
                "tokens": self.tokens, "source": self.source, "paths": self.paths,
                "biggestStrings": self.biggest_strings, "largeArrays": self.large_arrays,
                "valuesShown": self.values_shown}

    def to_frame(self):
        import pandas as pd

        cols = ["path", "depth", "count", "bytes", "share", "keyBytes", "overhead", "types", "items",
                "containers", "maxItems", "maxValueBytes", "keysFolded"]
        return pd.DataFrame.from_records(self.paths, columns=cols)

    def strings_frame(self):
        import pandas as pd

        return pd.DataFrame.from_records(self.biggest_strings,
                                         columns=["path", "role", "length", "offset", "prefix"])

    def arrays_frame(self):
        import pandas as pd

        return pd.DataFrame.from_records(self.large_arrays,
                                         columns=["path", "arrays", "items", "maxItems", "bytes"])

    def table(self, limit: int = 60) -> str:
        """A plain-text report (the CLI's ``--format table``)."""
        lines = [f"total {format_bytes(self.total_bytes)} ({self.total_bytes:,} bytes; root value "
                 f"{self.root_bytes:,}), max depth {self.max_depth}, {format_duration(self.seconds)} "
                 f"({format_rate(self.bytes_per_second)})"]
        if self.source:
            s = self.source
            lines.append(f"snapshot {s.get('where', '')}  envelope {s.get('envelope_location')} "
                         f"{s.get('envelope_format')}, payload {s.get('payload_location')} "
                         f"(gzip {s.get('payload_gzip')})")
        lines.append("")
        rows = self.paths[:limit]
        w = max([len("path")] + [len("  " * r["depth"] + r["path"]) for r in rows])
        lines.append(f"{'path'.ljust(w)}  {'bytes':>14}  {'share':>6}  {'count':>10}  {'items':>10}  types")
        for r in rows:
            name = ("  " * r["depth"] + r["path"]).ljust(w)
            items = "" if r["items"] is None else f"{r['items']:,}"
            lines.append(f"{name}  {r['bytes']:>14,}  {r['share'] * 100:5.1f}%  {r['count']:>10,}  {items:>10}  "
                         f"{','.join(f'{k}:{v}' for k, v in r['types'].items())}")
        if len(self.paths) > limit:
            lines.append(f"... {len(self.paths) - limit} more paths (--format json for all)")
        if self.biggest_strings:
            lines.append("")
            lines.append("biggest strings (bytes, path, role):")
            for s, times in _runs(self.biggest_strings):
                shown = "(value not shown; --show-values)" if s["prefix"] is None else repr(s["prefix"])
                more = f"  x{times}" if times > 1 else ""
                lines.append(f"  {s['length']:>14,}  {s['path']}  {s['role']}{more}  {shown}")
        if self.large_arrays:
            lines.append("")
            lines.append("largest arrays (by items in one array):")
            for a in self.large_arrays:
                lines.append(f"  {a['maxItems']:>14,}  {a['path']}  ({a['arrays']:,} arrays, {a['items']:,} items)")
        return "\n".join(lines)


def _runs(strings: list[dict]):
    """Equal neighbours (same length, path and role, values hidden) folded into one line with a count."""
    out: list[list] = []
    for s in strings:
        last = out[-1][0] if out else None
        if (last is not None and s["prefix"] is None and last["prefix"] is None
                and (s["length"], s["path"], s["role"]) == (last["length"], last["path"], last["role"])):
            out[-1][1] += 1
        else:
            out.append([s, 1])
    return out


def build_report(root: Node, total: int, root_bytes: int, max_depth: int, depth: int, strings, top, tokens, seconds,
                 source, show_values: bool = False) -> Anatomy:
    rows: list[dict] = []
    arrays: list[dict] = []

    def visit(node: Node):
        kids = list(node.children.values())
        if node.wild is not None:
            kids.append(node.wild)
        if node.item is not None:
            kids.append(node.item)
        child_bytes = sum(k.bytes + k.key_bytes for k in kids)
        is_container = node.types[T_OBJ] + node.types[T_ARR] > 0
        types = {TYPE_NAMES[t]: c for t, c in enumerate(node.types) if c and t in TYPE_NAMES}
        rows.append({
            "path": path_of(node), "depth": node.level, "count": node.count, "bytes": node.bytes,
            "share": round(node.bytes / total, 6) if total else 0.0, "keyBytes": node.key_bytes,
            "overhead": (node.bytes - child_bytes) if (is_container and node.level < depth) else None,
            "types": types, "items": node.members if is_container else None, "containers": node.containers,
            "maxItems": node.max_items if is_container else None, "maxValueBytes": node.max_value,
            "keysFolded": node.keys_folded})
        if node.types[T_ARR]:
            arrays.append({"path": path_of(node), "arrays": node.types[T_ARR], "items": node.members,
                           "maxItems": node.max_items, "bytes": node.bytes})
        for k in sorted(kids, key=lambda k: -(k.bytes + k.key_bytes)):
            visit(k)

    if root.count:
        visit(root)
    biggest = [{"path": path, "role": role, "length": length, "offset": off,
                "prefix": prefix if (show_values or role == "key") else None}  # keys are structure, values data
               for length, off, path, role, prefix in sorted(strings, key=lambda s: (-s[0], s[1]))]
    arrays.sort(key=lambda a: (-a["maxItems"], a["path"]))
    return Anatomy(total_bytes=total, root_bytes=root_bytes, max_depth=max_depth, depth=depth, paths=rows,
                   biggest_strings=biggest, large_arrays=arrays[:top] if top else [], tokens=tokens,
                   seconds=seconds, source=source, values_shown=show_values)


