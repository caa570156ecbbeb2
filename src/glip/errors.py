"""User-facing errors.

Every problem a user can cause (a missing file, an empty prompt, a checkpoint that does not fit
the model) raises a subclass of :class:`GLIPError` whose message says what was wrong and what to
do. The CLI prints that message on one line and exits with status 1; library callers can catch
``GLIPError`` to handle all of them at once.
"""

from __future__ import annotations


class GLIPError(Exception):
    """Base class of every user-facing error raised by ``glip``."""


class ConfigError(GLIPError, ValueError):
    """A configuration value is missing, malformed, or conflicts with another one."""


class PromptError(GLIPError, ValueError):
    """A text prompt is empty, too long, or does not contain the phrases it names."""


class ImageError(GLIPError, OSError):
    """An image file is missing, unreadable, or not an image."""


class CheckpointError(GLIPError, RuntimeError):
    """A checkpoint is missing, unreadable, or does not match the model it is loaded into."""


class DataError(GLIPError, ValueError):
    """An annotation file or dataset record is malformed."""


class OutputError(GLIPError, OSError):
    """An output file or folder cannot be written (full or read-only disk, no permission, unsafe target)."""
