"""The task registry: name -> Task instance. Registering is the only step a new task needs."""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from recipe.errors import RecipeError

_TASKS: dict = {}
_NOT_TASKS = {"base", "registry"}


def _built_in() -> set[str]:
    """Modules of recipe/tasks/ other than the interface: each defines the task it is named after. They load on
    first use, so listing the tasks (config validation, `recipe schema`) does not import torch."""
    return {m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])
            if not m.name.startswith("_") and m.name not in _NOT_TASKS}


def register(cls):
    """Class decorator: make `cls.name` a task every stage can run."""
    if cls.name in _TASKS and type(_TASKS[cls.name]) is not cls:
        raise ValueError(f"task '{cls.name}' is registered twice ({type(_TASKS[cls.name]).__name__}, {cls.__name__})")
    _TASKS[cls.name] = cls()
    return cls


def get(name: str):
    """The registered task called `name` (an instance); a built-in one is imported here the first time."""
    if name not in _TASKS and name in _built_in():
        importlib.import_module(f"recipe.tasks.{name}")
    try:
        return _TASKS[name]
    except KeyError:
        raise RecipeError(f"task: unknown task '{name}' (known: {', '.join(names())})") from None


def names() -> list[str]:
    """Every task a config may name: the built-in modules and whatever else registered itself."""
    return sorted(set(_TASKS) | _built_in())


def unregister(name: str) -> None:
    """Remove a task (tests that register a toy task clean up with this)."""
    _TASKS.pop(name, None)
