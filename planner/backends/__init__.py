"""The five targets, by the name ``--backend`` takes.

Each backend module is imported only when used: loading a botocore service model
costs a noticeable fraction of a second, and a command touches one backend.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from importlib import import_module
from types import ModuleType

from ..errors import InputError
from ..spec import BackendSpec, RoutedField

MODULES = {
    "omics-batch": "omics_batch",
    "omics-run": "omics_run",
    "batch": "aws_batch",
    "glue": "glue",
    "polly": "polly",
}


def backend_module(name: str) -> ModuleType:
    """The module of a backend: its SPEC and its runtime (submit, refresh, cancel, ...)."""
    if name not in MODULES:
        raise InputError(f"unknown backend {name!r}; choose one of {', '.join(MODULES)}")
    return import_module(f".{MODULES[name]}", __package__)


def get_backend(name: str) -> BackendSpec:
    spec: BackendSpec = backend_module(name).SPEC
    return spec


class _Specs(Mapping[str, BackendSpec]):
    """``BACKENDS[name]`` gives a backend's spec, importing its module on first use."""

    def __getitem__(self, name: str) -> BackendSpec:
        if name not in MODULES:
            raise KeyError(name)
        return get_backend(name)

    def __iter__(self) -> Iterator[str]:
        return iter(MODULES)

    def __len__(self) -> int:
        return len(MODULES)


BACKENDS: Mapping[str, BackendSpec] = _Specs()

__all__ = ["BACKENDS", "MODULES", "BackendSpec", "RoutedField", "backend_module", "get_backend"]
