"""The ``sekiops`` command: argument parsing, store opening and the error contract.

Exit 0 on success, 2 with one ``error:`` line for any expected failure (SekiopsError, bad usage,
unreadable files), 1 with a traceback for bugs. Command modules register their subcommands;
heavy imports happen inside the command functions so ``sekiops --help`` starts fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys

from .. import __version__
from ..errors import Interrupted, SekiopsError
from ..pipeline.outputs import completed
from ..units import parse_seconds, parse_size
from ..urls import redact

COMMAND_MODULES = [
    "sekiops.cli.snapshot",
    "sekiops.cli.inventory",
    "sekiops.cli.ops_reports",
    "sekiops.cli.evidence",
    "sekiops.cli.bench",
    "sekiops.cli.report",
    "sekiops.cli.migrate",
    "sekiops.cli.demo",
]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (the contract), no usage dump
        raise _UsageExit(f"{message} (see '{self.prog} --help')")


class _UsageExit(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sekiops", description=(
        "Operate Sekiban multi-projection snapshots: streaming persist and restore, inventories, "
        "audits, guarded migrations, memory metrics. Stores are URLs (see --help of each command); "
        "SEKIOPS_STATE_URL / SEKIOPS_BLOB_URL fill in when --state / --blob are absent."))
    parser.add_argument("--version", action="version", version=f"sekiops {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _raise_interrupted(signum, frame) -> None:
    raise Interrupted(signum)


def _install_signal_handlers() -> dict:
    """SIGTERM and SIGHUP raise like SIGINT does, so the same cleanup runs (partial outputs and
    temp files removed); returns the previous handlers."""
    previous = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        try:
            previous[sig] = signal.signal(sig, _raise_interrupted)
        except (ValueError, OSError):  # not the main thread (an embedding caller): leave them alone
            pass
    return previous


def main(argv: list[str] | None = None) -> int:
    previous = _install_signal_handlers()
    try:
        return _main(argv)
    except KeyboardInterrupt as exc:  # SIGINT, or SIGTERM/SIGHUP as Interrupted

        signum = getattr(exc, "signum", signal.SIGINT)
        name = signal.Signals(signum).name
        done = completed()
        if done:  # the work was finished before the signal: say so, not "interrupted"
            sys.stderr.write(f"sekiops: completed: {'; '.join(done)} ({name} arrived afterwards)\n")
            sys.stderr.flush()
            return 0
        _error(f"interrupted by {name}; partial outputs and temp files were removed, nothing was half-written")
        return 128 + signum
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _main(argv: list[str] | None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        import logging  # after parsing: --help, --version and usage errors do without it (~9 ms)

        # SDK loggers (azure, urllib3, boto) would print multi-line warnings before our one error
        # line; botocore's debug records also show request headers (signatures).
        for sdk in ("azure", "urllib3", "botocore", "boto3", "s3transfer"):
            logging.getLogger(sdk).setLevel(logging.ERROR)
        if args.verbose:
            logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
        return int(args.func(args) or 0)
    except _UsageExit as exc:
        _error(redact(str(exc)))
        return 2
    except SekiopsError as exc:
        _error(redact(str(exc)))
        return 2
    except BrokenPipeError:
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 2
    except OSError as exc:  # files named on the command line: missing, unreadable, disk full
        where = f" {exc.filename!r}" if getattr(exc, "filename", None) else ""
        _error(redact(f"{exc.strerror or exc}{where}"))
        return 2


def _error(message: str) -> None:
    message = " ".join(message.split())  # exactly one line
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()


# --- helpers for command modules ---------------------------------------------------------------


def add_store_args(p: argparse.ArgumentParser, blob: bool = True) -> None:
    p.add_argument("--state", metavar="URL", help="state store URL: sqlite:///path.db, postgresql://..., "
                   "cosmos+https://host/DB/CONTAINER, dynamodb://TABLE, memory:// (default: $SEKIOPS_STATE_URL)")
    if blob:
        p.add_argument("--blob", metavar="URL", help="blob store URL: file:///dir or a path, azblob://CONTAINER, "
                       "s3://BUCKET, memory:// (default: $SEKIOPS_BLOB_URL; none = nothing is offloaded)")
    p.add_argument("--service-id", default="default", help="Sekiban ServiceId scoping every read and write "
                   "(default: %(default)s)")


def size_type(what: str):
    """argparse ``type=`` for sizes: ``500MB``, ``4GiB``, ``1_560_576`` (sekiops.units)."""
    def parse(text: str) -> int:
        try:
            return parse_size(text, what=what)
        except SekiopsError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = "size"
    return parse


def duration_type(what: str):
    """argparse ``type=`` for durations, in seconds: ``90s``, ``30m``, ``24h``, ``7d``, ``3600``."""
    def parse(text: str) -> float:
        try:
            return parse_seconds(text, what=what)
        except SekiopsError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = "duration"
    return parse


#: how --help names the accepted forms
SIZE_HELP = "bytes, or 500MB / 1.5MiB / 4GiB"
DURATION_HELP = "seconds, or 90s / 30m / 24h / 7d"


def open_stores(args, blob: bool = True, create: bool = True):
    """Open the state (and blob) store; read-only commands pass create=False so nothing appears."""
    from ..blob import open_blob_store
    from ..state import open_state_store

    state = open_state_store(args.state, service_id=args.service_id, create=create)
    return state, (open_blob_store(getattr(args, "blob", None), create=create) if blob else None)


def print_json(obj, stream=None) -> None:
    """Indented JSON; long record lists (audit orphans held on disk) are streamed, not built."""
    from ..spill import write_json

    stream = stream or sys.stdout
    write_json(obj, stream)
    stream.flush()
