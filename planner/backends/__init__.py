"""Layer 5, the backends: the five targets, by the name ``--backend`` takes (a new backend goes here).

May import: ``planner.errors``, ``planner.core``, ``planner.services``, ``planner.engine``.

Each backend module is imported only when used: loading a botocore service model
costs a noticeable fraction of a second, and a command touches one backend.  A
module holds its ``SPEC`` (what the plan core needs) and a ``Backend`` subclass
named by ``BACKEND`` (its phases of creating calls, refresh and cancel; the
interface is in ``base.py``).

``register(name, module)`` adds a backend from outside the package for the Python
API (a test's in-memory stub, say); the CLI's ``--backend`` takes the five above.
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType
from typing import TYPE_CHECKING

from planner.backends.base import Backend
from planner.core.spec import BackendSpec
from planner.core.suggest import did_you_mean
from planner.errors import InputError

if TYPE_CHECKING:
    from planner.backends.base import Backend

MODULES = {
    "omics-batch": "omics_batch",
    "omics-run": "omics_run",
    "batch": "aws_batch",
    "glue": "glue",
    "polly": "polly",
}
_REGISTERED: dict[str, ModuleType] = {}


def register(name: str, module: ModuleType) -> None:
    """Serve backend ``name`` from ``module``, which holds its ``SPEC`` (named ``name``) and ``BACKEND``.

    The five built-in names cannot be replaced; ``unregister`` forgets the name again."""
    if name in MODULES:
        raise ValueError(f"{name!r} is a built-in backend")
    spec, cls = getattr(module, "SPEC", None), getattr(module, "BACKEND", None)
    if not isinstance(spec, BackendSpec) or spec.name != name:
        raise ValueError(f"{module.__name__}: SPEC must be a BackendSpec named {name!r}")
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise ValueError(f"{module.__name__}: BACKEND must be a subclass of planner.backends.base.Backend")
    _REGISTERED[name] = module


def unregister(name: str) -> None:
    """Forget a backend ``register`` added (nothing happens for a name it did not add)."""
    _REGISTERED.pop(name, None)


def _module(name: str) -> ModuleType:
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name not in MODULES:
        known = [*MODULES, *_REGISTERED]
        raise InputError(f"unknown backend {name!r}{did_you_mean(name, known)}; choose one of {', '.join(known)}")
    return import_module(f".{MODULES[name]}", __package__)


def get_backend(name: str) -> BackendSpec:
    """The plan-time spec of a backend."""
    spec: BackendSpec = _module(name).SPEC
    return spec


def backend_class(name: str) -> type[Backend]:
    """The class that submits, refreshes and cancels a plan of this backend."""
    cls: type[Backend] = _module(name).BACKEND
    return cls


__all__ = ["MODULES", "backend_class", "get_backend", "register", "unregister"]
