"""The project's error types; the CLI maps each to its exit code (DESIGN §1)."""
from __future__ import annotations


class RecipeError(Exception):
    """Bad input: config, CLI usage, unreadable or malformed data (exit 2)."""

    exit_code = 2

    def __init__(self, message: str | list[str]):
        self.messages = [message] if isinstance(message, str) else list(message)
        super().__init__("\n".join(self.messages))


class ConfigError(RecipeError):
    """A config value is wrong; every message starts with its key path."""


class DataError(RecipeError):
    """Data cannot be read or does not fit the config; messages name file/column."""


class ModelError(RecipeError):
    """The model cannot be built or returns outputs of the wrong shape."""


class GateError(RecipeError):
    """An upstream stage is missing, failed or stale (exit 3)."""

    exit_code = 3


class LockedError(RecipeError):
    """Another recipe process holds this run folder (exit 2)."""
