"""The package version, in a module of its own: a job reads it without importing the package
(and so every other job)."""

__version__ = "0.1.0"
