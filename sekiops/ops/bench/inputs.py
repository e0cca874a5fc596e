"""What a benchmark run starts from and must say it ran on: generated states, the machine, the stores."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess

import sekiops

from ...format.payload import backends, gzip_backend
from ...streams import CountingWriter
from ..synth import write_state

CHUNK = 2**20


def generate_state(path: str, target_bytes: int, seed: int = 42) -> dict:
    """Write :func:`sekiops.ops.synth.write_state`'s state of ~``target_bytes`` to ``path`` (streamed, once).

    A sidecar ``path + ".meta.json"`` records size and sha256; an existing file matching it is
    reused. Returns ``{"bytes": n, "sha256": hex, "target": target_bytes}``.
    """
    meta_path = path + ".meta.json"
    try:
        with open(meta_path) as f:
            meta = json.load(f)
        if (meta.get("target") == target_bytes and meta.get("seed") == seed
                and os.path.getsize(path) == meta.get("bytes")):
            return meta
    except (OSError, ValueError):
        pass

    partial = path + ".partial"
    with open(partial, "wb", buffering=CHUNK) as f:
        hf = CountingWriter(f, hash_it=True)
        n = write_state(hf, target_bytes, seed)
    os.replace(partial, path)
    meta = {"target": target_bytes, "seed": seed, "bytes": n, "sha256": hf.sha256}
    with open(meta_path, "w") as f:
        json.dump(meta, f)
    return meta


def file_digest(path: str) -> tuple[int, str]:
    """(bytes, sha256) of a file, read in 1 MiB steps."""
    h = hashlib.sha256()
    n = 0
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        while True:
            got = f.readinto(view)
            if not got:
                break
            h.update(view[:got])
            n += got
    return n, h.hexdigest()


def machine_info() -> dict:
    """nproc, RAM, CPU model, Python, gzip backend: what a benchmark table must say it ran on."""
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "ram_bytes": meminfo("MemTotal"), "cpu_model": cpu or platform.processor(),
            "python": platform.python_version(), "platform": platform.platform(),
            "gzip_backend": gzip_backend().name, "gzip_backends_installed": list(backends()),
            "sekiops_commit": _git_commit()}


def _git_commit() -> str | None:
    """``abc1234`` (``+dirty`` when sekiops/ has local changes) for a git checkout, else None."""
    root = package_root()
    if not os.path.exists(os.path.join(root, ".git")):
        return None
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "sekiops"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (head + ("+dirty" if dirty else "")) or None


def meminfo(field: str) -> int | None:
    """A /proc/meminfo field in bytes (``MemTotal``, ``MemAvailable``), None where unreadable."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def package_root() -> str:
    """The directory holding the ``sekiops`` package (children get it first on PYTHONPATH)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(sekiops.__file__)))


def backend_label(state_url: str, blob_url: str | None) -> str:
    """``sqlite+local``, ``postgresql+azblob``, ``cosmos+azblob``, ``sqlite+none`` ..."""
    scheme = state_url.split("://", 1)[0].lower() if "://" in state_url else "?"
    state = {"postgres": "postgresql", "cosmos+https": "cosmos", "cosmos+http": "cosmos"}.get(scheme, scheme)
    if not blob_url:
        blob = "none"
    else:
        b = blob_url.split("://", 1)[0].lower() if "://" in blob_url else "file"
        blob = {"file": "local"}.get(b, b)
    return f"{state}+{blob}"
