"""Verifiable task families. `get_task(name)` returns one; `TASKS` names them all."""

from __future__ import annotations

from ponder import PonderError
from ponder.tasks.base import Problem, Task

_REGISTRY: dict[str, type[Task]] = {}


def register(cls: type[Task]) -> type[Task]:
    _REGISTRY[cls.name] = cls
    return cls


def _load_all() -> None:
    # Importing a family's module registers it.
    from ponder.tasks import arithmetic, compare, countdown, cvp, serial  # noqa: F401


def get_task(name: str) -> Task:
    _load_all()
    if name not in _REGISTRY:
        raise PonderError(f"unknown task {name!r}; choose one of {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]()


def task_names() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


__all__ = ["Problem", "Task", "get_task", "register", "task_names"]
