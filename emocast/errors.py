"""Errors the library raises on purpose.

Every message says what failed, what was found against what was expected, and how to fix it.
Each class also derives from the matching built-in, so a host (ComfyUI, the CLI, a notebook)
that only knows the built-ins still shows them well.
"""


class EmoCASTError(Exception):
    """Base class: an error with a message meant for the user, never a bug report."""

    def __init__(self, message: str, hint: str | None = None):
        self.message = message
        self.hint = hint
        super().__init__(message if not hint else f"{message}\nHint: {hint}")


class InputError(EmoCASTError, ValueError):
    """The user's image, audio, prompt or settings cannot be used as given."""


class ConfigError(EmoCASTError, ValueError):
    """A configuration value is out of range or inconsistent."""


class CheckpointError(EmoCASTError, ValueError):
    """A weights file is missing keys, has the wrong layout, or is damaged."""


class MissingModelError(EmoCASTError, FileNotFoundError):
    """A model file the run needs is not where we looked."""


class MissingDependencyError(EmoCASTError, ImportError):
    """An optional Python package is not installed."""


class Cancelled(EmoCASTError, InterruptedError):
    """The run was cancelled between two steps; nothing was half-written."""
