"""Tasks as objects: `get(name)` returns the Task that owns loss, metric, baselines and predictions."""
from recipe.tasks.base import Task
from recipe.tasks.registry import get, names, register, unregister

__all__ = ["Task", "get", "names", "register", "unregister"]
