"""The package version (the single source: pyproject reads it from here)."""

__version__ = "0.2.0"
