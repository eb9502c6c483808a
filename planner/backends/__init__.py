"""The five targets, by the name ``--backend`` takes."""

from __future__ import annotations

from ..errors import InputError
from . import aws_batch, glue, omics_batch, omics_run, polly
from .base import BackendSpec, RoutedField

BACKENDS: dict[str, BackendSpec] = {
    spec.name: spec for spec in (omics_batch.SPEC, omics_run.SPEC, aws_batch.SPEC, glue.SPEC, polly.SPEC)
}


def get_backend(name: str) -> BackendSpec:
    try:
        return BACKENDS[name]
    except KeyError:
        raise InputError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}") from None


__all__ = ["BACKENDS", "BackendSpec", "RoutedField", "get_backend"]
