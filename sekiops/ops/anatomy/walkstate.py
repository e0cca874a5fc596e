"""What the walk carries from one chunk to the next (open containers, counts, candidates)."""

from __future__ import annotations

from .tree import Node


class Frame:
    __slots__ = ("node", "start", "is_obj", "expect_key", "key", "key_start", "n")

    def __init__(self, node, start, is_obj):
        self.node = node
        self.start = start
        self.is_obj = is_obj
        self.expect_key = is_obj
        self.key = None
        self.key_start = 0
        self.n = 0


class Pending:
    """A container at the deepest tracked level whose close is in a later chunk."""

    __slots__ = ("start", "node", "commas", "nonempty")

    def __init__(self, start, node):
        self.start = start
        self.node = node
        self.commas = 0
        self.nonempty = False


class WalkState:
    """Everything the walk carries from one chunk to the next."""

    def __init__(self, depth: int, top: int, max_keys: int, max_paths: int):
        self.depth = depth
        self.top = top
        self.max_keys = max_keys
        self.budget = [max_paths]  # paths the tree may still grow (Node.child folds beyond)
        self.root = Node(b"$", None, 0)
        self.stack: list[Frame] = []   # open containers at levels < depth
        self.roots = 0
        self.root_bytes = 0
        self.member_counts: dict[int, list] = {}  # level depth-1 container start -> [commas, nonempty]
        self.pending: Pending | None = None      # open container at level depth
        self.strings: list = []   # min-heap of (length, offset, path, role, prefix): at most top
        self.ctx: list = []       # (type, key text) of the last two tokens seen
        self.waiting: list = []   # string candidates waiting for their next token
        self.tokens = 0


KEY_WIDTH = 48  # keys up to this many raw bytes are grouped by numpy; longer ones in Python


