"""Tasks as objects: `get(name)` returns the Task that owns loss, metric, baselines and predictions."""
from recipe.tasks.base import Task
from recipe.tasks.registry import get, names, register, unregister
from recipe.tasks import classification, regression  # noqa: F401,E402 (registers the built-in tasks)

__all__ = ["Task", "get", "names", "register", "unregister"]
