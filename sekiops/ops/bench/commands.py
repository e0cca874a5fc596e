"""The programs the benchmark runs, declared here (not discovered from the CLI's parser).

Each scenario is one fresh process. The product's own commands measure sekiops (``sekiops
persist``, ``sekiops restore``, ``sekiops anatomy``); the benchmark's child entry point
(``python -m sekiops.ops.bench``, :mod:`sekiops.ops.bench.__main__`) runs the codec floor and the
*modelled* Sekiban byte[] path, which exists only there. The children accept the product
commands' options, so one argv builder serves both; ``tests/test_bench.py`` checks every argv
built here against the real CLI parser.

Mode ``legacy`` is the column value the benchmark frame, the capacity model and saved results
files have always used for Sekiban's byte[] path; what it is, is said by :data:`MODE_LABELS`:
modelled in Python from Sekiban's source, not measured on .NET. Its time is Python's transcoding
loops and means nothing for .NET, so the benchmark reports its memory only.
"""

from __future__ import annotations

import dataclasses

MODELLED = "legacy"
MODES = (MODELLED, "streaming")
OPS = ("persist", "restore", "anatomy")
DEFAULT_OPS = ("persist", "restore")

MODELLED_NOTE = "modelled in Python from Sekiban's source, not measured on .NET"
MODE_LABELS = {MODELLED: "Sekiban byte[] path, modelled", "streaming": "sekiops streaming"}

EVENTS_PROCESSED = 1000
LAST_SORTABLE_UNIQUE_ID = "063912345678901234500000000001"
CHILD_MODULE = "sekiops.ops.bench"


@dataclasses.dataclass(frozen=True)
class Command:
    """One program: ``python -m MODULE SUBCOMMAND ...``; ``name`` goes to the frame's command column."""

    module: str
    subcommand: str
    name: str

    def argv(self, python: str) -> list[str]:
        return [python, "-m", self.module, self.subcommand]


#: (op, mode) -> the program that measures it. Anatomy has one (streaming) implementation.
COMMANDS: dict[tuple[str, str], Command] = {
    ("persist", "streaming"): Command("sekiops", "persist", "sekiops persist"),
    ("restore", "streaming"): Command("sekiops", "restore", "sekiops restore"),
    ("anatomy", "streaming"): Command("sekiops", "anatomy", "sekiops anatomy"),
    ("persist", MODELLED): Command(CHILD_MODULE, "modelled-persist",
                                   "sekiops.ops.bench modelled-persist (Sekiban byte[] path, modelled)"),
    ("restore", MODELLED): Command(CHILD_MODULE, "modelled-restore",
                                   "sekiops.ops.bench modelled-restore (Sekiban byte[] path, modelled)"),
}
CODEC = Command(CHILD_MODULE, "codec", "sekiops.ops.bench codec")


def has_command(op: str, mode: str) -> bool:
    return (op, mode) in COMMANDS


def persist_argv(python: str, mode: str, store_args: list[str], projector: str, in_path: str, gzip: str,
                 payload_threshold: int | None = None, heap: bool = False) -> list[str]:
    argv = COMMANDS[("persist", mode)].argv(python) + [
        *store_args, "--projector", projector, "--version", "1", "--events-processed", str(EVENTS_PROCESSED),
        "--last-sortable-unique-id", LAST_SORTABLE_UNIQUE_ID, "--gzip", gzip, "--in", in_path]
    if payload_threshold is not None:
        argv += ["--payload-threshold", str(payload_threshold)]
    if heap:
        argv.append("--heap")
    return argv


def restore_argv(python: str, mode: str, store_args: list[str], projector: str, out_path: str,
                 verify: bool = False, heap: bool = False) -> list[str]:
    argv = COMMANDS[("restore", mode)].argv(python) + [*store_args, "--projector", projector, "--version", "1",
                                                       "--out", out_path]
    if verify:
        argv.append("--verify")
    if heap:
        argv.append("--heap")
    return argv


def anatomy_argv(python: str, store_args: list[str], projector: str) -> list[str]:
    return COMMANDS[("anatomy", "streaming")].argv(python) + [*store_args, "--projector", projector, "--version", "1",
                                                               "--format", "json"]


def codec_argv(python: str, direction: str, gzip: str, src: str, dst: str) -> list[str]:
    return CODEC.argv(python) + [direction, "--gzip", gzip, "--in", src, "--out", dst]
