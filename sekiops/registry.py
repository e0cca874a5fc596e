"""Backends chosen by URL scheme, papermill-style: built-ins, ``register()``, and entry points.

A backend is a factory ``factory(url, **options) -> store``, named either directly or as a
``"module:attr.attr"`` string imported on first use (so ``sekiops --help`` loads no SDK).
Third-party packages add schemes without touching sekiops through entry points::

    [project.entry-points."sekiops.state_stores"]
    mydb = "mypackage.store:MyStateStore.from_url"

    [project.entry-points."sekiops.blob_stores"]
    gcs = "mypackage.blobs:GcsBlobStore.from_url"

Precedence: ``register()`` over entry points over built-ins.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib import metadata
from typing import Any

from .errors import UsageError
from .urls import redact


def url_scheme(url: str, default: str = "") -> str:
    """The lower-cased scheme of ``url`` (``cosmos+https``), or ``default`` when it has none."""
    head, sep, _ = url.partition("://")
    return head.strip().lower() if sep and head.strip() else default


def load_target(target: str | Callable[..., Any]) -> Callable[..., Any]:
    """Import ``"module:attr.attr"`` (or return a callable as is)."""
    if callable(target):
        return target
    module, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module)
    for part in filter(None, attr.split(".")):
        obj = getattr(obj, part)
    return obj


class SchemeRegistry:
    """URL scheme -> backend factory, for one kind of store."""

    def __init__(self, what: str, group: str, builtins: dict[str, str]):
        self.what = what
        self.group = group
        self.builtins = dict(builtins)
        self.registered: dict[str, str | Callable[..., Any]] = {}
        self._entry_points: dict[str, metadata.EntryPoint] | None = None

    def register(self, scheme: str, target: str | Callable[..., Any]) -> None:
        """Add or replace a backend for ``scheme`` in this process."""
        self.registered[scheme.lower()] = target

    def unregister(self, scheme: str) -> None:
        self.registered.pop(scheme.lower(), None)

    def entry_points(self) -> dict[str, metadata.EntryPoint]:
        if self._entry_points is None:
            self._entry_points = {ep.name.lower(): ep for ep in metadata.entry_points(group=self.group)}
        return self._entry_points

    def schemes(self) -> list[str]:
        return sorted(set(self.builtins) | set(self.entry_points()) | set(self.registered))

    def factory(self, scheme: str, url: str) -> Callable[..., Any]:
        scheme = scheme.lower()
        if scheme in self.registered:
            return load_target(self.registered[scheme])
        ep = self.entry_points().get(scheme)
        if ep is not None:
            try:
                return ep.load()
            except Exception as exc:  # a broken plug-in must say which one
                raise UsageError(f"{self.what} backend {ep.value!r} for {scheme!r} (entry point group "
                                 f"{self.group}) cannot be loaded: {type(exc).__name__}: {exc}") from None
        if scheme in self.builtins:
            return load_target(self.builtins[scheme])
        raise UsageError(f"unknown {self.what} URL scheme {scheme!r} in {redact(url)!r}; "
                         f"known: {', '.join(self.schemes())}")

    def __contains__(self, scheme: str) -> bool:
        return scheme.lower() in self.schemes()


__all__ = ["SchemeRegistry", "load_target", "url_scheme"]
