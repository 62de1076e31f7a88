"""Every error superhf raises on purpose, under one base class that carries its exit code.

The command line turns a `SuperHFError` into one red line and the exit code (`cli.py`); the
Python API raises it as it is. Messages name the setting, file or function at fault and the fix.
Exit codes: 2 for input a user can correct (settings, data, rewards, judge), 1 for a run that
cannot go on.
"""

from __future__ import annotations


class SuperHFError(Exception):
    """Base of superhf's errors; `exit_code` is what the command line exits with."""

    exit_code = 1


class ConfigError(SuperHFError, ValueError):
    """A setting is invalid; the message names the field and the fix."""

    exit_code = 2


class DatasetError(SuperHFError, ValueError):
    """The data cannot be used; the message says which file, line or column and the fix."""

    exit_code = 2


class RewardError(SuperHFError, RuntimeError):
    """A reward function failed or returned something unusable; the message names it."""

    exit_code = 2


class JudgeError(SuperHFError, RuntimeError):
    """The judge endpoint or model failed; the message says why (never the API key)."""

    exit_code = 2


class CheckpointError(SuperHFError, RuntimeError):
    """A checkpoint cannot be written or used."""


class TrainingError(SuperHFError, RuntimeError):
    """The run cannot go on (too many non-finite steps, out of memory at batch size 1)."""
