"""The task registry: name -> Task instance. Registering is the only step a new task needs."""
from __future__ import annotations

from recipe.errors import RecipeError

_TASKS: dict = {}


def register(cls):
    """Class decorator: make `cls.name` a task every stage can run."""
    if cls.name in _TASKS and type(_TASKS[cls.name]) is not cls:
        raise ValueError(f"task '{cls.name}' is registered twice ({type(_TASKS[cls.name]).__name__}, {cls.__name__})")
    _TASKS[cls.name] = cls()
    return cls


def get(name: str):
    """The registered task called `name` (an instance)."""
    try:
        return _TASKS[name]
    except KeyError:
        raise RecipeError(f"task: unknown task '{name}' (known: {', '.join(sorted(_TASKS))})") from None


def names() -> list[str]:
    return sorted(_TASKS)


def unregister(name: str) -> None:
    """Remove a task (tests that register a toy task clean up with this)."""
    _TASKS.pop(name, None)
