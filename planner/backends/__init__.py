"""The five targets, by the name ``--backend`` takes.

Each backend module is imported only when used: loading a botocore service model
costs a noticeable fraction of a second, and a command touches one backend.  A
module holds its ``SPEC`` (what the plan core needs) and a ``Backend`` subclass
named by ``BACKEND`` (submission, status, cancel; the interface is in ``base.py``).
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType
from typing import TYPE_CHECKING

from ..errors import InputError
from ..spec import BackendSpec

if TYPE_CHECKING:
    from .base import Backend

MODULES = {
    "omics-batch": "omics_batch",
    "omics-run": "omics_run",
    "batch": "aws_batch",
    "glue": "glue",
    "polly": "polly",
}


def _module(name: str) -> ModuleType:
    if name not in MODULES:
        from ..suggest import did_you_mean

        raise InputError(
            f"unknown backend {name!r}{did_you_mean(name, list(MODULES))}; choose one of {', '.join(MODULES)}"
        )
    return import_module(f".{MODULES[name]}", __package__)


def get_backend(name: str) -> BackendSpec:
    """The plan-time spec of a backend."""
    spec: BackendSpec = _module(name).SPEC
    return spec


def backend_class(name: str) -> type[Backend]:
    """The runtime class of a backend (its submit, refresh and cancel)."""
    cls: type[Backend] = _module(name).BACKEND
    return cls


__all__ = ["MODULES", "backend_class", "get_backend"]
