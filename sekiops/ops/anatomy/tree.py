"""The path tree: one node per JSON path (``$``, ``$.customers``, ``$.customers[]`` ...) with its counts.

Objects used as dictionaries (aggregate ids as keys) would explode the tree: when an object path
has more than ``max_keys`` distinct keys, or the whole tree reaches ``max_paths`` nodes, the
object's children are folded into one ``*`` child (``keysFolded`` counts them).
"""

from __future__ import annotations

import json
import re


class Node:
    __slots__ = ("seg", "parent", "level", "count", "bytes", "key_bytes", "types", "children", "item", "wild",
                 "members", "containers", "max_items", "max_value", "keys_folded", "uid", "forward")

    _next_uid = 0

    def __init__(self, seg, parent, level):
        Node._next_uid += 1
        self.uid = Node._next_uid
        self.forward = None  # set when folded into a '*' node: where its numbers went
        self.seg = seg
        self.parent = parent
        self.level = level
        self.count = 0
        self.bytes = 0
        self.key_bytes = 0
        self.types = [0] * 11
        self.children: dict = {}
        self.item: Node | None = None
        self.wild: Node | None = None
        self.members = 0        # items (arrays) / members (objects) over all containers here
        self.containers = 0
        self.max_items = 0
        self.max_value = 0
        self.keys_folded = 0

    def child(self, key: bytes, max_keys: int, budget: list | None = None) -> Node:
        """The child for ``key``; folds every child into ``*`` past ``max_keys`` keys, or when the
        tree's ``budget`` (``[paths still allowed]``) is spent."""
        if self.wild is not None:
            self.keys_folded += 1
            return self.wild
        node = self.children.get(key)
        if node is None:
            if len(self.children) >= max_keys or (budget is not None and budget[0] <= 0):
                self.wild = fold(list(self.children.values()), self, self.level + 1)
                self.keys_folded = len(self.children) + 1
                self.children = {}
                return self.wild
            node = self.children[key] = Node(key, self, self.level + 1)
            if budget is not None:
                budget[0] -= 1
        return node

    def item_child(self) -> Node:
        node = self.item
        if node is None:
            node = self.item = Node(b"[]", self, self.level + 1)
        return node


def fold(nodes: list, parent, level) -> Node:
    star = Node(b"*", parent, level)
    for n in nodes:
        merge(star, n)
    return star


def live(node: Node) -> Node:
    """The node that now holds ``node``'s numbers (itself unless it was folded into '*')."""
    while node.forward is not None:
        node = node.forward
    return node


def merge(into: Node, n: Node) -> None:
    n.forward = into
    into.count += n.count
    into.bytes += n.bytes
    into.key_bytes += n.key_bytes
    into.types = [x + y for x, y in zip(into.types, n.types, strict=True)]
    into.members += n.members
    into.containers += n.containers
    into.max_items = max(into.max_items, n.max_items)
    into.max_value = max(into.max_value, n.max_value)
    into.keys_folded += n.keys_folded
    if n.item is not None:
        merge(into.item_child(), n.item)
    if n.wild is not None or into.wild is not None:
        if into.wild is None:
            into.wild = fold(list(into.children.values()), into, into.level + 1)
            into.children = {}
        for c in ([n.wild] if n.wild is not None else []) + list(n.children.values()):
            merge(into.wild, c)
        return
    for key, c in n.children.items():
        target = into.children.get(key)
        if target is None:
            target = into.children[key] = Node(key, into, into.level + 1)
        merge(target, c)


def key_text(raw: bytes) -> str:
    if b"\\" in raw:
        try:
            return json.loads(b'"' + raw + b'"')
        except ValueError:
            pass
    return raw.decode("utf-8", "replace")


_PLAIN_KEY = None


def segment(seg: bytes) -> str:
    global _PLAIN_KEY
    if seg == b"[]":
        return "[]"
    if seg == b"*":
        return ".*"
    if _PLAIN_KEY is None:
        _PLAIN_KEY = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$-]*$")
    text = key_text(seg)
    return "." + text if _PLAIN_KEY.match(text) else "[" + json.dumps(text, ensure_ascii=False) + "]"


def path_of(node: Node) -> str:
    parts = []
    while node is not None and node.parent is not None:
        parts.append(segment(node.seg))
        node = node.parent
    return "$" + "".join(reversed(parts))


